// Render Vega-Lite specs headless with the Vega builds inlined in the offline plot template, and
// print what was drawn: per data mark, its type and the colour of every item. Lets a Python test
// count series as a reader of `dvc plots show` would see them, without a browser.
// usage: node tests/vega_marks.js TEMPLATE.html < {"name": vega-lite spec, ...}  -> JSON on stdout
const fs = require("fs");
const vm = require("vm");

const html = fs.readFileSync(process.argv[2], "utf8");
const scripts = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1].replace(/<\\\/script/g, "</script"));
const sandbox = { console, setTimeout, clearTimeout, structuredClone };
sandbox.globalThis = sandbox;  // no `window`: Vega would bind browser events
vm.createContext(sandbox);
scripts.slice(0, 2).forEach((code) => vm.runInContext(code, sandbox));  // vega, then vega-lite (UMD globals)
const { vega, vegaLite } = sandbox;

function marks(node, out) {
  if (node.marktype && node.role === "mark" && node.items.length) {
    out.push({ type: node.marktype, name: node.name || null,
               colors: node.items.map((item) => item.stroke || item.fill || null) });
  }
  for (const item of node.items || []) {
    for (const child of item.items || []) marks(child, out);
  }
  return out;
}

(async () => {
  const specs = JSON.parse(fs.readFileSync(0, "utf8"));
  const result = {};
  for (const [name, spec] of Object.entries(specs)) {
    const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: "none" });
    await view.runAsync();
    result[name] = marks(view.scenegraph().root, []);
  }
  process.stdout.write(JSON.stringify(result));
})().catch((err) => { console.error(String(err)); process.exit(1); });
