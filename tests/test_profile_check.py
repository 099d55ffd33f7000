"""The profile/question overlap check (decision_distill/personas/profile_check.py): a profile that
names a question's topic is flagged with the words it shares, the vote list's own frame words and
stop words flag nothing, and plurals meet their singulars."""

from __future__ import annotations

from decision_distill.personas.profile_check import profile_overlaps

QUESTIONS = ["Should the board hire six more school counselors?",
             "Should the district place armed officers in every middle school?",
             "Should the board adopt the new reading curriculum?",
             "Should the district raise the athletics fee to $150?",
             "Should the board extend the superintendent's contract?"]


def _flagged(profiles, max_df=0.3, min_shared=1):
    report = profile_overlaps(profiles, QUESTIONS, max_df, min_shared)
    return {(f["persona"], f["question"]): f["shared_words"] for f in report["flagged"]}


def test_a_profile_that_names_a_votes_topic_is_flagged_with_the_shared_words():
    flagged = _flagged({"Ann": "Social worker; for more counselors, against armed officers and fees.",
                        "Bo": "Retired engineer who loves fishing and long walks."})
    assert flagged == {("Ann", QUESTIONS[0]): ["counselor"], ("Ann", QUESTIONS[1]): ["armed", "officer"],
                       ("Ann", QUESTIONS[3]): ["fee"]}


def test_the_vote_lists_frame_words_flag_nothing():
    """"board" and "district" are in every question (above max_df), "should" and "the" are stop words:
    a profile made of them shares no topic."""
    assert _flagged({"Cy": "Should the board and the district listen? The board should."}) == {}
    # With max_df 1 nothing is frame: the same profile now matches through "board" and "district".
    assert len(_flagged({"Cy": "Should the board and the district listen? The board should."}, max_df=1.0)) == 5


def test_min_shared_raises_the_bar_and_a_single_question_list_still_checks():
    profiles = {"Ann": "Against armed officers; for counselors."}
    assert set(_flagged(profiles, min_shared=2)) == {("Ann", QUESTIONS[1])}
    # One question: max_df of any share keeps its words (a word in one question is never frame).
    report = profile_overlaps(profiles, QUESTIONS[1:2], 0.1, 1)
    assert [f["shared_words"] for f in report["flagged"]] == [["armed", "officer"]]
    assert profile_overlaps({}, QUESTIONS, 0.1, 1)["flagged"] == []
