/** Stable error codes. A code never changes meaning once released; new codes may be added. */
export const ErrorCode = {
  DTYPE: 'DSA_E_DTYPE',
  SHAPE: 'DSA_E_SHAPE',
  FORMAT: 'DSA_E_FORMAT',
  RANGE: 'DSA_E_RANGE',
  VALUE: 'DSA_E_VALUE',
  ARGUMENT: 'DSA_E_ARGUMENT',
  BINDING: 'DSA_E_BINDING',
  IO: 'DSA_E_IO',
  CHECKPOINT: 'DSA_E_CHECKPOINT',
  STATE: 'DSA_E_STATE',
  ABORTED: 'DSA_E_ABORTED',
  INTERNAL: 'DSA_E_INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const KNOWN_CODES = new Set<string>(Object.values(ErrorCode));

/**
 * The one error class of the project. `code` is stable; `argument` names the offending input when
 * there is one. Checked by structure in `isDsaError`, so two copies of tensor-core interoperate.
 */
export class DsaError extends Error {
  readonly code: ErrorCode;
  readonly argument: string | undefined;
  constructor(code: ErrorCode, message: string, argument?: string) {
    super(message);
    this.name = 'DsaError';
    this.code = code;
    this.argument = argument;
  }
}

export function isDsaError(e: unknown): e is DsaError {
  return (
    typeof e === 'object' && e !== null && (e as { name?: unknown }).name === 'DsaError' &&
    typeof (e as { code?: unknown }).code === 'string' && KNOWN_CODES.has((e as { code: string }).code)
  );
}

/**
 * Native code throws plain errors whose `code` is a DSA_E_* string; turn them into DsaError so
 * callers see one class whatever layer caught the problem.
 */
export function fromNativeError(e: unknown): unknown {
  if (typeof e === 'object' && e !== null) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && KNOWN_CODES.has(code) && !(e instanceof DsaError)) {
      const message = String((e as { message?: unknown }).message ?? code);
      const arg = /^([A-Za-z_][\w.\[\]]*):/.exec(message)?.[1];
      return new DsaError(code as ErrorCode, message, arg);
    }
  }
  return e;
}
