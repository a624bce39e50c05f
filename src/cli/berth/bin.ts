#!/usr/bin/env node
/** The berth command's entry point. */
import { errorMessage } from "../../common/errors.js";
import { main } from "./main.js";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // keep-alive sockets and an open stdin must not hold the process; exit once stdout has drained
    process.stdout.write("", () => process.exit(code));
  },
  (e) => {
    process.stderr.write(`Error: ${errorMessage(e)}\n`);
    process.exit(1);
  },
);
