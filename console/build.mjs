// Builds the console into services/reporter/static/console (committed: serving it needs no
// Node.js). `make console` runs this after `npm ci`.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";

// CONSOLE_OUT builds elsewhere (the test that checks the committed build is current).
const out = process.env.CONSOLE_OUT
  ? process.env.CONSOLE_OUT.replace(/\/?$/, "/")
  : new URL("../services/reporter/static/console/", import.meta.url).pathname;
// Built in memory first: a failed build leaves the committed files as they were.
const result = await build({
  entryPoints: { app: "src/main.js" },
  bundle: true,
  format: "esm",
  target: ["chrome110", "firefox110", "safari16"],
  minify: true,
  legalComments: "eof",
  outdir: out + "assets",
  write: false,
  logLevel: process.env.CONSOLE_OUT ? "warning" : "info",
});
rmSync(out, { recursive: true, force: true });
mkdirSync(out + "assets", { recursive: true });
for (const file of result.outputFiles) writeFileSync(file.path, file.contents);
copyFileSync("src/index.html", out + "index.html");
