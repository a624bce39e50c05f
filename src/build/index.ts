/** The Dockerfile builder: parser, word expansion, .dockerignore and the builder over an executor the engine provides. */
export { Builder, StepFailed, DEFAULT_PATH, type BuildEvent, type BuildExecutor, type BuildOptions, type BuildResult, type RunStep, type StepMount } from "./builder.js";
export { parseDockerfile, type Dockerfile, type Instruction, type Heredoc } from "./parser.js";
export { expandWord, splitWords, parseKeyValues } from "./shell.js";
export { IgnoreMatcher } from "./ignore.js";
export { parseSshFlags } from "./ssh.js";
