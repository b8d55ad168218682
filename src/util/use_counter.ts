/** Counts holders per key (e.g. backups reading a snapshot); a key is in use while any holds it. */
export class UseCounter {
  #holders = new Map<string, number>();

  /** Takes one hold on `key`; the returned release may be called more than once. */
  use(key: string): () => void {
    this.#holders.set(key, (this.#holders.get(key) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.#holders.get(key) ?? 1) - 1;
      if (n > 0) this.#holders.set(key, n);
      else this.#holders.delete(key);
    };
  }

  inUse(key: string): boolean {
    return this.#holders.has(key);
  }
}
