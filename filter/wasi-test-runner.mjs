#!/usr/bin/env -S node --no-warnings
// Runs a wasm32-wasip1 test binary (built by `cargo test --target wasm32-wasip1`) under
// Node's built-in WASI, forwarding arguments and the exit code.
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import { argv, env, exit } from "node:process";

const [, , wasmPath, ...args] = argv;
const wasi = new WASI({ version: "preview1", args: [wasmPath, ...args], env, preopens: { "/": "/" }, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(wasmPath));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
exit(wasi.start(instance));
