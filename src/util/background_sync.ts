/**
 * Syncs in the background while a writer goes on: after every `every` bytes written, `sync` runs,
 * one run at a time (bytes written meanwhile wait for the next), so the disk writes during the
 * work and a final sync waits only for the tail. Failures are kept for `drain()`.
 */
export class BackgroundSync {
  #every: number;
  #sync: () => Promise<void>;
  #pending = 0;
  #running: Promise<void> | undefined;
  #failure: { error: unknown } | undefined;

  constructor(every: number, sync: () => Promise<void>) {
    this.#every = every;
    this.#sync = sync;
  }

  /** Counts `bytes` written; starts a run once `every` bytes wait and none is running. */
  wrote(bytes: number): void {
    this.#pending += bytes;
    if (this.#pending < this.#every || this.#running) return;
    this.#pending = 0;
    this.#running = this.#sync()
      .catch((error) => void (this.#failure ??= { error }))
      .finally(() => (this.#running = undefined));
  }

  /**
   * Waits for the run in progress and forgets the bytes counted since (the caller syncs them);
   * rejects with the first failure of any run since the last drain.
   */
  async drain(): Promise<void> {
    await this.#running;
    this.#pending = 0;
    const failure = this.#failure;
    this.#failure = undefined;
    if (failure) throw failure.error;
  }
}
