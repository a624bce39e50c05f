/** berth as a library. The engine (`Engine`) arrives with the engine layer; today the runtime is public. */
export * from "./runtime/index.js";
export { BerthError, HelperError, type ErrorKind } from "./common/errors.js";
