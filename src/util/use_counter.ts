/**
 * Counts holders per key (e.g. backups reading a snapshot); a key is in use while any holds it.
 * A key may have several parts, e.g. a volume and one of its snapshots.
 */
export class UseCounter {
  #holders = new Map<string, number>();

  /** Takes one hold on the key; the returned release may be called more than once. */
  use(...parts: string[]): () => void {
    const key = parts.join("\u0000");
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

  inUse(...parts: string[]): boolean {
    return this.#holders.has(parts.join("\u0000"));
  }
}
