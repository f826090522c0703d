// Runs named checks one after the other and prints one JSON object: each check's result, or
// {"failed": "<the error>"} for a check that threw (the pytest side asserts on both).
// The gateway's address and keys come from the environment the test gives.

export const BASE_URL = process.env.TIERGATE_URL;
export const API_KEY = process.env.TIERGATE_KEY;

if (!BASE_URL || !API_KEY) {
  console.error('set TIERGATE_URL and TIERGATE_KEY (tests/sdk_js/test_*.py does)');
  process.exit(2);
}

/** The x-tiergate-* and x-request-id headers of a fetch Response, as a plain object. */
export function receipt(headers) {
  const picked = {};
  for (const [name, value] of headers.entries()) {
    if (name.startsWith('x-tiergate-') || name === 'x-request-id' || name === 'retry-after') {
      picked[name] = value;
    }
  }
  return picked;
}

/** What a thrown SDK error says: its class, status, and the API's error fields. */
export function described(error) {
  return {
    class: error?.constructor?.name,
    status: error?.status ?? null,
    message: String(error?.message ?? error),
    error: error?.error ?? null,
    requestId: error?.requestID ?? null,
    retryAfter: error?.headers?.get?.('retry-after') ?? null,
  };
}

/** Run the checks named on the command line (all of them when none is named). */
export async function main(checks) {
  const names = process.argv.slice(2);
  const chosen = names.length ? names : Object.keys(checks);
  const results = {};
  for (const name of chosen) {
    if (!(name in checks)) {
      results[name] = { failed: `no check named ${name}` };
      continue;
    }
    const started = performance.now();
    try {
      results[name] = await checks[name]();
    } catch (error) {
      results[name] = { failed: String(error?.stack ?? error), ...described(error) };
    }
    results[name].elapsedMs = performance.now() - started;
  }
  process.stdout.write(JSON.stringify(results));
}
