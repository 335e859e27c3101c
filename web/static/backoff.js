// Delays between reconnect attempts and between retries of a rejected send: exponential
// backoff with full jitter, the same rule as the Rust client (clients/src/backoff.rs).

/** Exponential backoff with full jitter: attempt n waits uniformly in [0, min(cap, base * 2^n)]. */
export class Backoff {
  constructor({ baseMs = 100, capMs = 5000 } = {}) {
    this.baseMs = baseMs;
    this.capMs = capMs;
  }

  /** Returns the upper bound in milliseconds of the delay before attempt `attempt` (0-based). */
  ceiling(attempt) {
    // NOTE: 2^20 times any sensible base is already past any sensible cap.
    const factor = 2 ** Math.min(Math.max(attempt, 0), 20);
    return Math.min(this.baseMs * factor, this.capMs);
  }

  /** Returns the full-jitter delay before attempt `attempt`, given a uniform sample in [0, 1). */
  delay(attempt, unit) {
    const clamped = Math.min(Math.max(unit, 0), 1);
    return this.ceiling(attempt) * clamped;
  }

  /**
   * Returns the delay after the server asked to wait `retryAfterMs`: at least that long plus
   * this backoff's jitter, so clients rejected together do not come back at the same instant.
   */
  delayAfter(retryAfterMs, attempt, unit) {
    return Math.max(retryAfterMs, 0) + this.delay(attempt, unit);
  }
}
