// The platform's API as the portal calls it. The access token lives in this module's closure
// and nowhere else: never localStorage or sessionStorage, which every script on the origin
// (and anything that reads the disk profile) can read long after the tab is closed (README,
// Portal). The refresh token is in an HttpOnly cookie this code cannot read either: `auth`
// sets it on /auth/portal/login and rotates it on /auth/portal/refresh, the only paths the
// browser sends it to. After a reload the page asks /auth/portal/refresh for a new access token.

let session = null;

/** A refusal of the API, from its problem details (RFC 9457) when it sent them. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    // `https://health-platform.dev/problems/mfa-required` -> `mfa-required`
    this.slug = typeof problem.type === 'string' ? problem.type.split('/').pop() : '';
  }
}

/** What to tell a person about `error`, in plain words. */
export function explain(error) {
  if (!(error instanceof ApiError)) {
    return 'The platform could not be reached. Check your connection and try again.';
  }
  const detail = error.problem.detail ? ` (${error.problem.detail})` : '';
  switch (error.slug) {
    case 'invalid-credentials': return 'The username, password or code is not right.';
    case 'mfa-required': return 'Enter the current code from your authenticator app.';
    case 'mfa-enrollment-required': return 'Your role needs a second factor: set up your authenticator app below.';
    case 'login-locked': return 'Too many failed attempts: this account is locked for a while. Try again later.';
    case 'invalid-current-password': return 'The current password is not right.';
    case 'too-many-requests': return 'Too many requests: wait a minute and try again.';
    case 'not-operator': return 'That is not the platform operator token. Staff and tenant admins sign in with their username above.';
    default: break;
  }
  switch (error.status) {
    case 400: return `The platform did not accept this${detail}.`;
    case 401: return 'Your session has ended. Sign in again.';
    case 403: return `You are not allowed to do this${detail}.`;
    case 404: return 'Not found, or not yours to see.';
    case 409: return `This conflicts with the current state${detail}.`;
    case 413: return 'That is too large.';
    case 429: return 'Too many requests: wait a minute and try again.';
    default: return `The platform could not do this (error ${error.status})${detail}.`;
  }
}

/** Decodes a JWS's claims (no verification: the API verifies; this only reads role and expiry). */
function claimsOf(token) {
  const part = token.split('.')[1] || '';
  const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
  const json = new TextDecoder().decode(Uint8Array.from(atob(base64), (c) => c.charCodeAt(0)));
  return JSON.parse(json);
}

async function parse(response) {
  const type = response.headers.get('content-type') || '';
  if (response.status === 204) return null;
  if (type.includes('ndjson')) return response.text();
  if (type.includes('json')) return response.json();
  return response.text();
}

/**
 * `method` `path` with a JSON `body`; the bearer token when signed in (or `bearer`, the
 * operator token being checked before it becomes the session's). Throws ApiError.
 */
export async function call(method, path, body, bearer = session?.token) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  // The portal's session endpoints: the cookie goes with them, and the header that shows
  // `auth` the request comes from the portal's own page (CSRF).
  const portal = path.startsWith('/auth/portal/');
  if (portal) headers['x-health-portal'] = '1';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: portal ? 'same-origin' : 'omit',
    cache: 'no-store',
    // `same-origin` for the session endpoints: under `no-referrer` a browser sends `Origin: null`
    // on a same-origin POST, and `auth` checks the Origin.
    referrerPolicy: portal ? 'same-origin' : 'no-referrer',
  });
  const data = await parse(response);
  if (!response.ok) {
    const problem = data && typeof data === 'object' ? data : { title: String(data || '') };
    const error = new ApiError(response.status, problem);
    // A token the platform no longer takes (expired, revoked, its key revoked): signed out.
    if (response.status === 401 && session && (path.startsWith('/api/') || session.operator)) forget();
    throw error;
  }
  return data;
}

const listeners = new Set();
/** `fn(session | null)` whenever the session starts or ends. */
export function onSession(fn) { listeners.add(fn); }
function changed() { for (const fn of listeners) fn(session); }

function start(tokens, username) {
  // An insurer's access token is a nested JWE (five parts) no page can read: not a portal user.
  if (tokens.access_token.split('.').length !== 3) {
    throw new ApiError(403, { title: 'Forbidden', detail: 'insurer accounts use the API, not the portal' });
  }
  const claims = claimsOf(tokens.access_token);
  session = {
    token: tokens.access_token,
    tenant: claims.tenant_id,
    username: username || claims.sub,
    subject: claims.sub,
    role: claims.role,
    expiresAt: claims.exp,
  };
}

/** Signs in; throws ApiError (`mfa-required`, `mfa-enrollment-required`, ...). */
export async function signIn({ tenant, username, password, otp }) {
  const body = { tenant, username, password };
  if (otp) body.otp = otp;
  start(await call('POST', '/auth/portal/login', body), username);
  changed();
  return session;
}

/**
 * A new access token from the cookie's refresh token (after a reload, or before the current one
 * expires); `null` when there is no live session. The view is redrawn only for a new session.
 */
export async function refresh() {
  const before = session;
  try {
    start(await call('POST', '/auth/portal/refresh'), before?.username);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 400 || error.status === 401)) {
      if (before) forget();
      return null;
    }
    throw error;
  }
  if (!before) changed();
  return session;
}

/**
 * Signs the platform operator in with the operator token they paste. The token is kept like an
 * access token, in this closure only (never web storage or a cookie): a reload, sign-out or the
 * page's idle timeout forgets it, and there is nothing to refresh. It is checked first on the
 * one route only the operator may read, the chain of requests refused before any tenant
 * (`GET /admin/audit/verify/_unattributed`): a tenant admin's token there is 403.
 */
export async function signInOperator(token) {
  const candidate = token.trim();
  try {
    await call('GET', '/admin/audit/verify/_unattributed', undefined, candidate);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      throw new ApiError(error.status, { title: 'Not the operator token', detail: 'not the platform operator token', type: 'not-operator' });
    }
    throw error;
  }
  session = { operator: true, token: candidate, tenant: 'platform', username: 'operator', subject: 'operator', role: 'operator', expiresAt: null };
  changed();
  return session;
}

export function current() { return session; }

/** Forgets the session here (the token is gone from memory). */
export function forget() {
  if (!session) return;
  session = null;
  changed();
}

/**
 * `/auth/portal/logout` (this session's tokens revoked, the cookie cleared), or with
 * `everywhere` `/auth/logout-all` (every session of the account; this tab's dead cookie is
 * cleared by the next refresh it fails), then forgets the session.
 */
export async function signOut(everywhere) {
  try {
    // The operator has no session on the server: forgetting the token is the sign-out.
    if (!session?.operator) await call('POST', everywhere ? '/auth/logout-all' : '/auth/portal/logout');
  } finally {
    forget();
  }
}

/** Starts TOTP enrolment: `{otpauth_uri, secret}`. */
export function enroll({ tenant, username, password }) {
  return call('POST', '/auth/mfa/enroll', { tenant, username, password });
}

/** Confirms enrolment with the first code. */
export function confirm({ tenant, username, password, otp }) {
  return call('POST', '/auth/mfa/confirm', { tenant, username, password, otp });
}

export function changePassword(currentPassword, newPassword) {
  return call('POST', '/api/auth/change-password', { currentPassword, newPassword });
}

/** A path segment, encoded. */
export function seg(value) { return encodeURIComponent(String(value).trim()); }
