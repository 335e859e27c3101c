// Ids every client computes alike (docs/protocol.md, "Ids").

const DIRECT_DOMAIN = "tidings/direct/v1";

function compareBytes(left, right) {
  const length = Math.min(left.length, right.length);
  for (let index = 0; index < length; index += 1) {
    if (left[index] !== right[index]) {
      return left[index] - right[index];
    }
  }
  return left.length - right.length;
}

/**
 * Returns the id of the direct conversation between two users: the first 8 bytes, big-endian,
 * of SHA-256("tidings/direct/v1" 0x00 low 0x00 high), where low and high are the UTF-8 user
 * ids sorted by bytes. `alice` and `bob` give 17709311867916754363n.
 */
export async function directConversationId(userA, userB) {
  const encoder = new TextEncoder();
  const [low, high] = [encoder.encode(userA), encoder.encode(userB)].sort(compareBytes);
  const domain = encoder.encode(DIRECT_DOMAIN);
  const input = new Uint8Array(domain.length + 1 + low.length + 1 + high.length);
  input.set(domain, 0);
  input.set(low, domain.length + 1);
  input.set(high, domain.length + 1 + low.length + 1);
  const digest = await crypto.subtle.digest("SHA-256", input);
  return new DataView(digest).getBigUint64(0, false);
}
