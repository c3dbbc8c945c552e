// What `watch` creates on production, per target: one publication of the target's tables and one
// logical slot (pgoutput), both named after the target, so targets never share a position.
/** elara_sync_<target>, lower case, only [a-z0-9_] (slot names allow nothing else), at most 63 bytes. */
export function streamName(target: string): string {
  const base = target.toLowerCase().replace(/[^a-z0-9_]/g, '_');
  return `elara_sync_${base}`.slice(0, 63);
}
export const slotName = streamName;
export const publicationName = streamName;
