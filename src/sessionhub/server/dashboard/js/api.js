// The REST API, with the tab's token. Errors are the server's problem documents
// (application/problem+json), so a 409 or 403 can be shown as the server worded it.

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.title = problem?.title || (status ? `HTTP ${status}` : 'Network error');
    this.problem = problem || {};
  }

  /** "409 Illegal transition: session is 'ended' ..." */
  get text() {
    return this.status ? `${this.status} ${this.title}: ${this.message}` : this.message;
  }
}

function queryString(query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') params.set(key, value);
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}

export class Api {
  /** `onUnauthorized(error)` is called on any 401: the token is no longer good. */
  constructor(token, onUnauthorized = () => {}) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  async request(method, path, { query, body, timeout = 15000 } = {}) {
    const headers = { Accept: 'application/json', Authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path + queryString(query), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeout),
        cache: 'no-store',
      });
    } catch {
      throw new ApiError(0, { title: 'Network error', detail: 'the server cannot be reached' });
    }
    if (!response.ok) {
      let problem = {};
      try {
        problem = await response.json();
      } catch {
        problem = { title: response.statusText };
      }
      const error = new ApiError(response.status, problem);
      if (response.status === 401) this.onUnauthorized(error);
      throw error;
    }
    return response.status === 204 ? null : response.json();
  }

  get(path, query) {
    return this.request('GET', path, { query });
  }

  post(path, body) {
    return this.request('POST', path, { body: body ?? {} });
  }

  delete(path) {
    return this.request('DELETE', path);
  }
}
