/**
 * Ctrl-C during training: the first press asks the loop to save and stop after the step in
 * flight, a second one exits at once without saving.
 * @module
 */

/** A Ctrl-C request flag the training loop polls between steps. */
export interface StopRequest {
  /** Ctrl-C was pressed (the loop saves a resume checkpoint and stops). */
  readonly requested: boolean;
  /**
   * Lets a pending SIGINT in: CPU steps never leave the microtask queue, so the signal (a
   * macrotask) would wait for the whole run. Yields at most every 50 ms.
   */
  poll(): Promise<void>;
  /** Removes the signal listener. */
  dispose(): void;
}

/**
 * Listens for SIGINT (when `enabled`; otherwise `requested` stays false).
 *
 * @param enabled install the listener
 * @param say where the two notices go
 * @returns the request flag
 */
export function onCtrlC(enabled: boolean, say: (line: string) => void): StopRequest {
  let requested = false;
  let lastYield = performance.now();
  const listener = () => {
    if (requested) {
      say("Second Ctrl-C: exiting without saving");
      Deno.exit(130);
    }
    requested = true;
    say("Ctrl-C: saving a resume checkpoint after this step (Ctrl-C again to quit now)");
  };
  if (enabled) Deno.addSignalListener("SIGINT", listener);
  return {
    get requested() {
      return requested;
    },
    async poll() {
      if (performance.now() - lastYield <= 50) return;
      await new Promise((r) => setTimeout(r, 0));
      lastYield = performance.now();
    },
    dispose() {
      if (enabled) Deno.removeSignalListener("SIGINT", listener);
    },
  };
}
