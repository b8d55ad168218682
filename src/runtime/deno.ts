/** The few Deno APIs the runtime adapters use, typed here so the npm build needs no Deno types. */
export interface DenoCommandOutput {
  code: number;
  signal: string | null;
  stdout: Uint8Array;
  stderr: Uint8Array;
}
export interface DenoChild {
  stdin: WritableStream<Uint8Array>;
  output(): Promise<DenoCommandOutput>;
  kill(signal?: string): void;
}
export interface DenoLike {
  Command: new (cmd: string, opts: {
    args: string[];
    cwd?: string;
    env?: Record<string, string>;
    stdin: "piped" | "null";
    stdout: "piped";
    stderr: "piped";
  }) => { spawn(): DenoChild };
  build: { standalone?: boolean };
}

/** Deno's global when running on Deno, else undefined. */
export const deno: DenoLike | undefined = (globalThis as { Deno?: DenoLike }).Deno;
/** True under Bun (run or compiled). */
export const isBun = "Bun" in globalThis;
