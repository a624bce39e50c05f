/**
 * The builder's pure parts, without root: the Dockerfile parser (directives, continuations,
 * comments, heredocs, JSON and shell forms, flags, errors with line and column), BuildKit's word
 * expansion, and .dockerignore matching with docker's rules.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseDockerfile } from "../src/build/parser.js";
import { expandWord, parseKeyValues, splitWords } from "../src/build/shell.js";
import { IgnoreMatcher } from "../src/build/ignore.js";
import { goDuration, goQuote, goQuoteList, goQuoteRune } from "../src/build/gofmt.js";

test("parser: continuations, comments inside them, exec and shell forms, flags, keywords in any case", () => {
  const df = parseDockerfile(["# escape=\\", "", "from busybox AS Base", "RUN echo a \\", "  # a comment inside", "  && echo b", 'CMD ["sh", "-c", "echo hi"]', "COPY --from=base --chown=1:2 a b /dst/", "run ls"].join("\n"));
  assert.equal(df.escape, "\\");
  assert.deepEqual(
    df.instructions.map((i) => [i.keyword, i.line]),
    [["FROM", 3], ["RUN", 4], ["CMD", 7], ["COPY", 8], ["RUN", 9]],
  );
  assert.equal(df.instructions[1]!.args, "echo a   && echo b");
  assert.deepEqual(df.instructions[2]!.json, ["sh", "-c", "echo hi"]);
  assert.deepEqual(df.instructions[3]!.flags, [{ name: "from", value: "base" }, { name: "chown", value: "1:2" }]);
  assert.equal(df.instructions[3]!.args, "a b /dst/");
  // not JSON after all: shell form
  assert.equal(parseDockerfile("FROM x\nCMD [not json]\n").instructions[1]!.json, undefined);
});

test("parser: the backtick escape directive, and directives only at the top", () => {
  const df = parseDockerfile("# escape=`\nFROM x\nRUN dir c:\\ `\n  && echo done\n");
  assert.equal(df.escape, "`");
  assert.equal(df.instructions[1]!.args, "dir c:\\   && echo done");
  const late = parseDockerfile("FROM x\n# escape=`\nRUN a \\\n b\n");
  assert.equal(late.escape, "\\");
  assert.equal(late.instructions[1]!.args, "a  b");
});

test("parser: heredocs — several on a line, <<- strips tabs, quoted names do not expand", () => {
  const df = parseDockerfile(["FROM x", "RUN <<A cat - <<-'B'", "one", "A", "\ttwo", "\tB", "COPY <<EOF /f", "$X", "EOF"].join("\n"));
  const run = df.instructions[1]!;
  assert.deepEqual(run.heredocs, [
    { name: "A", content: "one\n", expand: true },
    { name: "B", content: "two\n", expand: false },
  ]);
  assert.equal(df.instructions[2]!.heredocs[0]!.content, "$X\n");
  assert.equal(df.instructions[2]!.line, 7);
});

test("parser: errors name the file, line and column", () => {
  assert.throws(() => parseDockerfile("FROM x\n  FROBNICATE y\n", "My.Dockerfile"), /My\.Dockerfile:2:3: unknown instruction: FROBNICATE/);
  assert.throws(() => parseDockerfile("FROM x\nRUN <<EOF\nno end\n"), /unterminated heredoc EOF/);
  assert.throws(() => parseDockerfile("# escape=x\nFROM x\n"), /invalid escape token/);
});

test("words: quotes, escapes and every substitution form", () => {
  const v = new Map<string, string | undefined>([
    ["A", "apple"],
    ["E", ""],
    ["P", "/usr/local/bin/tool.tar.gz"],
  ]);
  const x = (w: string) => expandWord(w, v);
  assert.equal(x("$A"), "apple");
  assert.equal(x("${A}s"), "apples");
  assert.equal(x("'$A'"), "$A");
  assert.equal(x('"$A pie"'), "apple pie");
  assert.equal(x("\\$A"), "$A");
  assert.equal(x('"\\$A"'), "$A");
  assert.equal(x("${U:-dflt}|${E:-dflt}|${E-dflt}|${U-dflt}"), "dflt|dflt||dflt");
  assert.equal(x("${A:+yes}|${E:+yes}|${E+yes}|${U+yes}"), "yes||yes|");
  assert.equal(x("${P#*/}|${P##*/}|${P%.*}|${P%%.*}"), "usr/local/bin/tool.tar.gz|tool.tar.gz|/usr/local/bin/tool.tar|/usr/local/bin/tool");
  assert.equal(x("${A/p/P}|${A//p/P}"), "aPple|aPPle");
  assert.throws(() => x("${U:?must be set}"), /U: must be set/);
  assert.equal(x("$"), "$");
  assert.deepEqual(splitWords(`a "b c" 'd e' f\\ g`), ["a", '"b c"', "'d e'", "f\\ g"]);
});

test("ENV/LABEL pairs: quoted values, and the legacy `ENV key value` form", () => {
  const v = new Map<string, string | undefined>([["X", "1"]]);
  assert.deepEqual(parseKeyValues('a=$X b="two words" c=\\"q\\"', v, "\\", { legacy: true, requireValue: true }), [
    ["a", "1"],
    ["b", "two words"],
    ["c", '"q"'],
  ]);
  assert.deepEqual(parseKeyValues("PATH /usr/bin:$X", v, "\\", { legacy: true, requireValue: true }), [["PATH", "/usr/bin:1"]]);
  assert.deepEqual(parseKeyValues("NAME OTHER=x", v, "\\", { legacy: false, requireValue: false }), [
    ["NAME", undefined],
    ["OTHER", "x"],
  ]);
});

test(".dockerignore: docker's patterns, ** and exceptions, last match wins", () => {
  const m = IgnoreMatcher.parse("# c\n*.log\n!keep.log\n/build\n**/*.tmp\ndocs/*/draft\n!docs/a/draft/ok.md\n");
  assert.ok(m.ignores("x.log"));
  assert.ok(!m.ignores("keep.log"));
  assert.ok(!m.ignores("sub/x.log"), "* does not cross directories");
  assert.ok(m.ignores("build") && m.ignores("build/out/bin"), "a directory excludes what is below it");
  assert.ok(m.ignores("a.tmp") && m.ignores("deep/er/b.tmp"));
  assert.ok(m.ignores("docs/a/draft/x.md"));
  assert.ok(!m.ignores("docs/a/draft/ok.md"));
  assert.ok(!m.ignores("docs/a/final.md"));
  assert.equal(m.reason("x.log"), "*.log");
});

test("history text as Go's fmt prints it (BuildKit's created_by): %q of lists, durations and runes", () => {
  assert.equal(goQuoteList(["/bin/sh", "-c", 'echo "hi"\tthere\\']), '["/bin/sh" "-c" "echo \\"hi\\"\\tthere\\\\"]');
  assert.equal(goQuote("\x01é\x7f"), '"\\x01é\\x7f"');
  assert.deepEqual([0, 500, 1_500_000, 5e9, 1.5e9, 90e9, 3600e9, 3661e9].map(goDuration), ["0s", "500ns", "1.5ms", "5s", "1.5s", "1m30s", "1h0m0s", "1h1m1s"]);
  assert.deepEqual([0, 4, 10, 65, 39].map(goQuoteRune), ["'\\x00'", "'\\x04'", "'\\n'", "'A'", "'\\''"]);
});
