"""Does a profile give a vote away? A profile that names a voted question's topic and the
person's side of it turns the profile arms into readers of the answer key. This lexical check
lists, for review, every (person, question) pair whose profile and question share content words:

  content words  lower-case alphabetic words, English stop words (scikit-learn's list) removed,
                 plurals and -ing folded ("fees" meets "fee", "testing" meets "tests");
  boilerplate    words in more than `max_df` of the questions are left out (at least words in a
                 single question are always kept): on a vote list they are its frame ("board",
                 "district"), not a topic; scikit-learn's max_df, corpus-specific stop words;
  flagged        at least `min_shared` shared content words; the words are listed with the pair.

It flags for a reader to judge and proves nothing either way: a shared word may be background
("teacher" for a retired teacher), and a profile can give a vote away in other words.
"""

from __future__ import annotations

import re

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

_WORD = re.compile(r"[a-z]+")


def fold(word: str) -> str:
    """Porter's step 1a (plurals) and a plain -ing strip: a crude stem, enough to match a
    profile's "officers" to a question's "officer"."""
    if word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        word = word[:-1]
    if word.endswith("ing") and len(word) > 6:
        word = word[:-3]
    return word


def content_words(text: str) -> list[str]:
    text = text.lower().replace("'s", "")
    return [fold(w) for w in _WORD.findall(text) if len(w) > 1 and w not in ENGLISH_STOP_WORDS]


def profile_overlaps(profiles: dict[str, str], questions: list[str], max_df: float, min_shared: int) -> dict:
    """The rule, and every flagged pair with its shared words, in profile then question order."""
    rule = (f"a profile and a question share at least {min_shared} content word(s), leaving out stop words and "
            f"words in more than {max_df:.0%} of the questions")
    return {"rule": rule, "max_df": max_df, "min_shared": min_shared, "pairs": len(profiles) * len(questions),
            "flagged": _flagged(profiles, questions, max_df, min_shared)}


def _flagged(profiles: dict[str, str], questions: list[str], max_df: float, min_shared: int) -> list[dict]:
    if not profiles or not questions:
        return []
    # A word in one question is never boilerplate, however short the vote list.
    vectorizer = CountVectorizer(analyzer=content_words, binary=True, max_df=max(1, int(max_df * len(questions))))
    try:
        asked = vectorizer.fit_transform(questions).toarray().astype(bool)
    except ValueError:  # no content word left in any question: nothing to share
        return []
    vocabulary = vectorizer.get_feature_names_out()
    described = vectorizer.transform(list(profiles.values())).toarray().astype(bool)
    return [{"persona": person, "question": question, "shared_words": sorted(map(str, shared))}
            for i, person in enumerate(profiles) for j, question in enumerate(questions)
            if len(shared := vocabulary[described[i] & asked[j]]) >= min_shared]
