import { inspect } from 'node:util';

const REDACTED = '[redacted]';

/**
 * Holds a secret value (worker token, registry password, secret data) so that it cannot reach a
 * log line, an error message or a JSON body by accident: string conversion, JSON and
 * util.inspect all print `[redacted]`. Call `reveal()` only at the point of use (an HTTP header).
 */
export class Secret {
  readonly #value: string;

  constructor(value: string) {
    this.#value = value;
  }

  reveal(): string {
    return this.#value;
  }

  get length(): number {
    return this.#value.length;
  }

  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return REDACTED;
  }
}
