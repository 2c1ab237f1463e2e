// A real OpenID provider for the federation suite (tests/e2e/federation.rs): `oidc-provider`
// (certified) serving two providers on one loopback port, issuers http://127.0.0.1:PORT/a and
// /b, each with its discovery document and JWK Set. Tokens come from oidc-provider itself (its
// IdToken and AccessToken models, signed with its keystore). A test-only control API beside
// them, never part of a provider: mint tokens, forge the negative cases the provider would
// never issue (future iat, alg none, HS256 keyed with the public key) with the provider's own
// key material, rotate keys, take a provider down, and count JWK Set fetches (answered or not).
// Back-channel logout (OIDC Back-Channel Logout 1.0) is oidc-provider's own: a client given a
// `backchannel_logout_uri` through the control API, and `Client#backchannelLogout`, which is what
// the provider's end_session endpoint calls, signs the logout token and POSTs it there.
//
// Browser sign-in (the authorization code flow with PKCE) is oidc-provider's own too, with its
// devInteractions login and consent forms: a client given `redirect_uris` through the control API
// becomes a public client (`token_endpoint_auth_method: 'none'`, so PKCE), and the claims an
// account's ID token carries (its email) are set through it.
//
// Prints `listening PORT` on stdout once ready; runs until its stdin closes (the test ends).
import { createServer } from 'node:http';
import { generateKeyPairSync, createHmac } from 'node:crypto';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const CLIENTS = ['health-north', 'health-south', 'other-app'];
const state = {}; // name -> { provider, keys: [private JWK], down, jwksFetches, discoveryFetches, logoutUris }
let base = '';
// The claims an access token of each account carries (oidc-provider's extraTokenClaims).
const accountClaims = new Map();
// The claims of each account signing in through the browser (findAccount).
const signinClaims = new Map();

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `k-${Math.random().toString(36).slice(2, 10)}`, alg: 'RS256', use: 'sig' };
}

function makeProvider(name, keys, logoutUris = {}, signinUris = {}) {
  const provider = new Provider(`${base}/${name}`, {
    clients: CLIENTS.map((client_id) => ({
      client_id,
      ...(signinUris[client_id]
        ? { token_endpoint_auth_method: 'none', redirect_uris: signinUris[client_id] }
        : { client_secret: `${client_id}-secret`, redirect_uris: ['http://127.0.0.1/cb'] }),
      id_token_signed_response_alg: 'RS256',
      ...(logoutUris[client_id]
        ? { backchannel_logout_uri: logoutUris[client_id], backchannel_logout_session_required: true }
        : {}),
    })),
    jwks: { keys },
    features: {
      devInteractions: { enabled: true },
      backchannelLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        getResourceServerInfo: () => ({ scope: 'openid', accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } }),
      },
    },
    ttl: { IdToken: 600, AccessToken: 600 },
    claims: { acr: null, sid: null, auth_time: null, iss: null, openid: ['sub'], email: ['email', 'email_verified'] },
    // The email in the code flow's ID token itself, not only at the userinfo endpoint.
    conformIdTokenClaims: false,
    findAccount: (ctx, id) => ({
      accountId: id,
      claims: () => ({ sub: id, ...(signinClaims.get(`${name}/${id}`) ?? {}) }),
    }),
    // The platform under test listens on loopback, which oidc-provider's SSRF guard (a dispatcher
    // refusing special-use addresses) would refuse to deliver logout tokens to: the test's fetch
    // leaves it out. Nothing else about delivery changes.
    fetch: (url, { dispatcher, ...options }) => globalThis.fetch(url, options),
    extraTokenClaims: (ctx, token) => accountClaims.get(`${name}/${token.accountId}`),
  });
  return provider;
}

function setUp(name) {
  const keys = [newKey()];
  state[name] = { provider: makeProvider(name, keys), keys, down: false, jwksFetches: 0, discoveryFetches: 0, logoutUris: {}, signinUris: {} };
}

async function mint({ provider: name, client: clientId, kind, sub, claims = {} }) {
  const { provider } = state[name];
  const client = await provider.Client.find(clientId);
  if (kind === 'access_token') {
    accountClaims.set(`${name}/${sub}`, claims);
    const token = new provider.AccessToken({
      accountId: sub,
      client,
      scope: 'openid',
      resourceServer: { audience: clientId, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } },
    });
    token.aud = clientId;
    return token.save();
  }
  const idToken = new provider.IdToken({ sub }, { client });
  idToken.scope = 'openid email';
  for (const [key, value] of Object.entries(claims)) idToken.set(key, value);
  return idToken.issue({ use: 'idtoken' });
}

// The negative cases no provider issues, made from the provider's own key material.
// `typ` sets the header's; `keyOf` signs with another provider's key under this one's kid; a
// claim given as null is left out.
async function forge({ provider: name, client: clientId, alg, kid, sub, claims = {}, typ, keyOf }) {
  const { keys } = state[name];
  const key = keyOf ? { ...state[keyOf].keys[0], kid: keys[0].kid } : keys[0];
  const now = Math.floor(Date.now() / 1000);
  const payload = { iss: `${base}/${name}`, aud: clientId, sub, iat: now, exp: now + 600, ...claims };
  for (const [claim, value] of Object.entries(payload)) if (value === null) delete payload[claim];
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  if (alg === 'none') {
    return `${b64({ alg: 'none', kid: key.kid })}.${b64(payload)}.`;
  }
  if (alg === 'HS256') {
    // The classic confusion: the public key's PEM as an HMAC secret.
    const { n, e, kty } = key;
    const publicPem = (await jose.importJWK({ n, e, kty }, 'RS256', { extractable: true }));
    const pem = await jose.exportSPKI(publicPem);
    const input = `${b64({ alg: 'HS256', kid: key.kid })}.${b64(payload)}`;
    return `${input}.${createHmac('sha256', pem).update(input).digest('base64url')}`;
  }
  const privateKey = await jose.importJWK(key, 'RS256');
  return new jose.SignJWT(payload)
    .setProtectedHeader({ alg: 'RS256', kid: kid ?? key.kid, ...(typ ? { typ } : {}) })
    .sign(privateKey);
}

async function control(path, body) {
  switch (path) {
    case '/control/mint': return { token: await mint(body) };
    case '/control/forge': return { token: await forge(body) };
    case '/control/rotate': {
      const s = state[body.provider];
      s.keys = [newKey(), ...s.keys];
      s.provider = makeProvider(body.provider, s.keys, s.logoutUris, s.signinUris);
      return { kid: s.keys[0].kid };
    }
    case '/control/backchannel': {
      const s = state[body.provider];
      s.logoutUris = { ...s.logoutUris, [body.client]: body.uri };
      s.provider = makeProvider(body.provider, s.keys, s.logoutUris, s.signinUris);
      return {};
    }
    case '/control/signin-client': {
      const s = state[body.provider];
      s.signinUris = { ...s.signinUris, [body.client]: body.redirect_uris };
      s.provider = makeProvider(body.provider, s.keys, s.logoutUris, s.signinUris);
      return {};
    }
    case '/control/account': {
      signinClaims.set(`${body.provider}/${body.account}`, body.claims);
      return {};
    }
    case '/control/logout': {
      // What end_session does for each client of the session: sign a logout token, POST it.
      const client = await state[body.provider].provider.Client.find(body.client);
      try {
        await client.backchannelLogout(body.sub, body.sid);
        return { delivered: true };
      } catch (error) {
        return { delivered: false, error: `${error?.message ?? error} ${error?.cause ?? ""}` };
      }
    }
    case '/control/down': state[body.provider].down = body.down; return {};
    case '/control/stats': return Object.fromEntries(Object.entries(state).map(([n, s]) => [n, { jwks: s.jwksFetches, discovery: s.discoveryFetches, kid: s.keys[0].kid }]));
    default: throw new Error(`no control ${path}`);
  }
}

const server = createServer(async (req, res) => {
  try {
    if (req.url.startsWith('/control/')) {
      const chunks = [];
      for await (const chunk of req) chunks.push(chunk);
      const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : {};
      const answer = JSON.stringify(await control(req.url, body));
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(answer) });
      res.end(answer);
      return;
    }
    const name = req.url.split('/')[1];
    const s = state[name];
    if (!s) { res.writeHead(404); res.end(); return; }
    const rest = req.url.slice(name.length + 1) || '/';
    // Attempts are counted, answered or not.
    if (rest.startsWith('/jwks')) s.jwksFetches += 1;
    if (rest.startsWith('/.well-known/openid-configuration')) s.discoveryFetches += 1;
    if (s.down) { res.writeHead(503); res.end(); return; }
    req.originalUrl = req.url;
    req.url = rest;
    s.provider.callback()(req, res);
  } catch (error) {
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(String(error?.stack ?? error));
  }
});

server.listen(0, '127.0.0.1', () => {
  base = `http://127.0.0.1:${server.address().port}`;
  setUp('a');
  setUp('b');
  process.stdout.write(`listening ${server.address().port}\n`);
  // The test reads that one line, then stops reading: anything logged later goes to stderr.
  console.log = console.error;
  process.stdout.on('error', () => {});
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
