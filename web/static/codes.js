// Stable error and close codes of the Tidings protocol (docs/protocol.md), and the mapping
// from WebSocket close codes back to Tidings close codes.

/** Error codes of `Error` frames, by number. */
export const ERROR_NAMES = new Map([
  [1, "MALFORMED_FRAME"],
  [2, "UNKNOWN_FRAME"],
  [3, "UNSUPPORTED_VERSION"],
  [4, "FRAME_TOO_LARGE"],
  [5, "MESSAGE_TOO_LARGE"],
  [10, "UNAUTHENTICATED"],
  [11, "INVALID_TOKEN"],
  [12, "TOKEN_EXPIRED"],
  [20, "NOT_MEMBER"],
  [21, "UNKNOWN_CONVERSATION"],
  [22, "GROUP_TOO_LARGE"],
  [23, "NOT_ADMIN"],
  [24, "IDEMPOTENCY_CONFLICT"],
  [25, "INVALID_REQUEST"],
  [26, "STREAM_MISMATCH"],
  [27, "TOO_MANY_STREAMS"],
  [30, "RATE_LIMITED"],
  [31, "OWNER_UNAVAILABLE"],
  [32, "OVERLOADED"],
  [33, "STORAGE_FAILED"],
  [34, "SHUTTING_DOWN"],
  [35, "NOT_SHARD_OWNER"],
  [40, "INTERNAL"],
]);

export const ErrorCode = Object.freeze({
  FRAME_TOO_LARGE: 4,
  MESSAGE_TOO_LARGE: 5,
  UNAUTHENTICATED: 10,
  INVALID_TOKEN: 11,
  TOKEN_EXPIRED: 12,
  UNKNOWN_CONVERSATION: 21,
});

/** Error codes a client retries after `retryAfterMs`; the others are final. */
const RETRYABLE = new Set([30, 31, 32, 33, 34]);

/** Error codes that end the sign-in: reconnecting with the same token cannot succeed. */
const AUTH_ERRORS = new Set([10, 11, 12]);

export function isRetryable(code) {
  return RETRYABLE.has(code);
}

export function isAuthError(code) {
  return AUTH_ERRORS.has(code);
}

/** Returns the name of an error code, INTERNAL for numbers this client does not know. */
export function errorName(code) {
  return ERROR_NAMES.get(code) ?? "INTERNAL";
}

/** Close codes of `Close` frames and QUIC connection closes, by number. */
export const CLOSE_NAMES = new Map([
  [0x0, "NORMAL"],
  [0x101, "PROTOCOL_VIOLATION"],
  [0x102, "AUTH_FAILED"],
  [0x103, "TOKEN_EXPIRED"],
  [0x104, "SERVER_SHUTDOWN"],
  [0x105, "STREAM_LIMIT"],
  [0x106, "STREAM_IDLE"],
  [0x107, "INTERNAL_ERROR"],
  [0x108, "KICKED"],
]);

export const CloseCode = Object.freeze({
  NORMAL: 0x0,
  AUTH_FAILED: 0x102,
  TOKEN_EXPIRED: 0x103,
  KICKED: 0x108,
});

/** Returns the name of a close code, or its hex value when this client does not know it. */
export function closeName(code) {
  return CLOSE_NAMES.get(code) ?? `0x${code.toString(16)}`;
}

/**
 * Reports whether the client must not reconnect on its own after this close: the token
 * cannot be used again, or an operator ended the session.
 */
export function isPermanentClose(code) {
  return code === CloseCode.AUTH_FAILED || code === CloseCode.TOKEN_EXPIRED || code === CloseCode.KICKED;
}

/** WebSocket close code the edge sends for a message over its frame limit (RFC 6455, 7.4.1). */
export const WS_CLOSE_TOO_BIG = 1009;

/**
 * Maps a WebSocket close code from the edge to a Tidings close code: 1000 is NORMAL and
 * 4000 + n is 0x100 + n. Returns null for other codes (1006 when the socket just dropped).
 */
export function closeCodeFromWebSocket(code) {
  if (code === 1000) {
    return CloseCode.NORMAL;
  }
  if (code >= 4000 && code <= 4255) {
    return 0x100 + (code - 4000);
  }
  return null;
}
