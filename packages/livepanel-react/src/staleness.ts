/** How often the hooks read `client.staleness`: not on every frame, about once a second. */
export const STALENESS_EVERY_MS = 1000;

/** Staleness as the hooks expose it: whole seconds, `Infinity` before anything arrived. */
export function wholeSeconds(staleness: number): number {
  return Number.isFinite(staleness) ? Math.floor(staleness) : Infinity;
}

/**
 * Read `client.staleness` now and then every `STALENESS_EVERY_MS`, handing whole seconds to
 * `set` (a state setter: an unchanged value does not re-render); returns the stop function.
 */
export function watchStaleness(client: { readonly staleness: number }, set: (seconds: number) => void): () => void {
  const read = () => set(wholeSeconds(client.staleness));
  read();
  const timer = setInterval(read, STALENESS_EVERY_MS);
  return () => clearInterval(timer);
}
