// Which parts of a flow a client may send back: the properties flowd's flow schema does not mark
// readOnly. Server fields (id, status, revision, ...) are dropped from saves.
import flowSchema from "../../../schemas/flow.schema.json";
import type { Flow } from "../api";

const props = flowSchema.properties as Record<string, { readOnly?: boolean }>;

export const writableFields = Object.keys(props).filter((k) => !props[k].readOnly);

/** writable is the part of a flow that can be saved: no server fields, no unknown ones. */
export function writable(f: Partial<Flow>, drop: string[] = []): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of writableFields) {
    if (!drop.includes(k) && f[k] !== undefined) out[k] = f[k];
  }
  return out;
}

/**
 * mergePatch is the RFC 7396 patch from a saved flow to an edited one: changed fields are
 * sent whole, removed ones as null. Only writable fields are compared.
 */
export function mergePatch(saved: Partial<Flow>, edited: Partial<Flow>): Record<string, unknown> {
  const a = writable(saved);
  const b = writable(edited);
  const patch: Record<string, unknown> = {};
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (!(k in b)) patch[k] = null;
    else if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) patch[k] = b[k];
  }
  return patch;
}
