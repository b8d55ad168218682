/**
 * The devicemapper driver's thin-id journal (`PendingDevIDs` in devicemapper.cfg).
 *
 * An id is journaled in the same atomic write of devicemapper.cfg that hands it out
 * (LastDevID), or before a delete removes the record that references it, and cleared once a
 * record references it or the pool no longer has it. A daemon killed in between leaves the id
 * journaled; the next start deletes each journaled id that no record and no Kept entry
 * references (after removing any device mapping it). Ids that were never journaled (made by
 * another tool) are never deleted. The one window left: killed after the journal write but
 * before the pool message, an id the pool never made stays journaled, and were another tool to
 * take that very id before the next start, that start would delete it.
 * @module
 */
import type { Logger, PluginApi } from "../../mod.ts";
import { EXISTS, failedWith, MAX_DEV_ID, NO_DATA } from "./dm.ts";
import type { ThinPool } from "./pool.ts";

/** Attempts at a free thin id when the pool already has the next one (an id lost by a crash). */
const ID_ATTEMPTS = 16;

/** Hands out, journals and deletes the thin ids of one pool. */
export class ThinIds {
  #api: PluginApi;
  #pool: ThinPool;
  #log: Logger;

  constructor(api: PluginApi, o: { pool: ThinPool; log: Logger }) {
    this.#api = api;
    this.#pool = o.pool;
    this.#log = o.log;
  }

  /** A new thin id, saved (LastDevID) and journaled in one write before use. */
  async #allocate(): Promise<number> {
    return await this.#pool.config.update((cfg) => {
      const id = cfg.LastDevID + 1;
      if (id > MAX_DEV_ID) {
        throw new this.#api.errors.BackendError(
          `Thin pool "${this.#pool.name}" has run out of thin device ids (${MAX_DEV_ID})`,
        );
      }
      cfg.LastDevID = id;
      cfg.PendingDevIDs = [...cfg.PendingDevIDs, id];
      return id;
    });
  }

  /**
   * Sends `msg(id)` with a fresh journaled id; the caller clears it (settle) once a record
   * references it, or deletes it. When the pool already has that id (made by another tool, or
   * lost by a crash of a version without the journal), it is not ours: it leaves the journal,
   * is never deleted, and the next id is tried. On any other failure the id is deleted in case
   * the pool made it (a failed metadata commit, a timeout).
   */
  async withNew(msg: (id: number) => string): Promise<number> {
    for (let attempt = 1;; attempt++) {
      const id = await this.#allocate();
      try {
        await this.#pool.message(msg(id));
        return id;
      } catch (err) {
        if (!failedWith(err, EXISTS)) {
          await this.delete([id], `"${msg(id)}" failed`);
          throw err;
        }
        await this.settle([id]);
        if (attempt >= ID_ATTEMPTS) throw err;
        this.#log.warn(`Thin id ${id} is taken in pool "${this.#pool.name}"; trying the next one`);
      }
    }
  }

  /** Journals ids a delete is about to unrecord (before the record goes). */
  async journal(ids: number[]): Promise<void> {
    await this.#pool.config.update((cfg) => {
      cfg.PendingDevIDs = [...new Set([...cfg.PendingDevIDs, ...ids])];
    });
  }

  /**
   * Clears `ids` from the journal: a record references them, the pool no longer has them, or
   * they are not ours. Never throws, and never reverted: when the save fails, the next save
   * drops them from the file.
   */
  async settle(ids: number[]): Promise<void> {
    const mine = ids.filter((id) => this.#pool.cfg.PendingDevIDs.includes(id));
    if (!mine.length) return;
    await this.#pool.config.update((cfg) => {
      cfg.PendingDevIDs = cfg.PendingDevIDs.filter((id) => !mine.includes(id));
    }, { keepOnFailure: true }).catch((err) =>
      this.#log.warn(
        `Cannot clear thin ids ${
          mine.join(", ")
        } from the journal in "${this.#pool.config.file}": ${this.#api.errors.errorMessage(err)}`,
        { devIDs: mine },
      )
    );
  }

  /** `delete <id>`; an id the pool does not have is fine. */
  async #deleteOne(id: number): Promise<void> {
    try {
      await this.#pool.message(`delete ${id}`);
    } catch (err) {
      if (!failedWith(err, NO_DATA)) throw err;
    }
  }

  /**
   * Deletes journaled ids that nothing references any more and clears them from the journal.
   * Never throws: an id the pool cannot delete is logged (`why` says what was being done) and
   * stays journaled; the next start deletes it.
   */
  async delete(ids: number[], why: string): Promise<void> {
    const deleted: number[] = [];
    for (const id of ids) {
      try {
        await this.#deleteOne(id);
        deleted.push(id);
      } catch (err) {
        this.#log.warn(
          `Cannot delete thin id ${id} (${why}): ${
            this.#api.errors.errorMessage(err)
          }; the next start deletes it`,
          { pool: this.#pool.name, devID: id },
        );
      }
    }
    await this.settle(deleted);
  }

  /**
   * Finishes what killed creates and deletes left in the journal: an id in `referenced` (by a
   * record or Kept) is only cleared; any other is deleted from the pool (the devices mapping it
   * removed first; an id the pool does not have is fine), then cleared. `referenced` undefined
   * (a record could not be read, so the ids it holds are unknown: `why`) deletes nothing.
   * Never throws: an id that cannot be deleted is logged and stays journaled.
   */
  async finish(referenced: Set<number> | undefined, why?: string): Promise<void> {
    const pending = [...this.#pool.cfg.PendingDevIDs];
    if (!pending.length) return;
    const pool = this.#pool.name;
    const later = (msg: string) => `${msg}; the next start tries again`;
    let devices: Map<number, string[]> | undefined;
    try {
      if (!referenced) throw new this.#api.errors.BackendError(why ?? "records unknown");
      devices = await this.#pool.thinDevices();
    } catch (err) {
      this.#log.warn(
        `Not deleting the thin ids ${pending.join(", ")} left by interrupted operations: ${
          later(this.#api.errors.errorMessage(err))
        }`,
        { pool, devIDs: pending },
      );
      return;
    }
    const done: number[] = [];
    for (const id of pending) {
      if (referenced.has(id)) {
        done.push(id);
        continue;
      }
      try {
        for (const name of devices.get(id) ?? []) {
          await this.#pool.dm.remove(name, 10);
          this.#log.info(`Removed device "${name}" of the orphaned thin id ${id}`, {
            pool,
            devID: id,
            device: name,
          });
        }
        await this.#deleteOne(id);
        this.#log.info(`Deleted thin id ${id}, orphaned by an interrupted operation`, {
          pool,
          devID: id,
        });
        done.push(id);
      } catch (err) {
        this.#log.warn(
          `Cannot delete the orphaned thin id ${id}: ${later(this.#api.errors.errorMessage(err))}`,
          { pool, devID: id },
        );
      }
    }
    await this.settle(done);
  }
}
