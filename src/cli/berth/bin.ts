#!/usr/bin/env node
/** The berth command's entry point (the bundle's; the start-up snapshot's is snapshot.ts). */
import { runMain } from "./main.js";

runMain(process.argv.slice(2));
