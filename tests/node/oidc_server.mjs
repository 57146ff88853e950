// A real OAuth 2.0 authorization server for agentgw's OAuth2 integration tests
// (tests/integration/test_oauth.cpp): panva's oidc-provider with the device flow (RFC 8628)
// and the client_credentials grant enabled, refresh tokens rotated on every use (so replaying
// an old one revokes the whole grant, RFC 9700 §4.14.2), plus a few test-only endpoints.
//
//   node oidc_server.mjs [--access-token-ttl SECS]
//
// Listens on 127.0.0.1 with a kernel-chosen port and prints exactly one line to stdout,
// `listening <port> <issuer>`, once it accepts connections; everything else (the provider's
// notices included) goes to stderr. Serves until SIGTERM or SIGINT, then exits 0.
//
// Clients:
//   agentgw-device   public (token_endpoint_auth_method none); grants device_code and
//                    refresh_token; gets a refresh token with every token set.
//   agentgw-service  confidential (client_secret_post, secret k_service_secret below);
//                    grant client_credentials; scope api:read.
//
// Test-only endpoints (never part of a real server):
//   POST /__test/approve?user_code=C[&account=A]   approves the pending device code C for
//        account A (default "test-user") in-process, the way oidc-provider's own
//        test/device_code tests do; 404 when no valid code has that user code.
//   POST /__test/deny?user_code=C                  the user denies C (access_denied).
//   POST /__test/tokens[?scope=S]                  a real token set for agentgw-device (a code
//        approved in-process, then redeemed at this server's own token endpoint): the token
//        endpoint's JSON answer. Counted like any other device_code request.
//   POST /__test/revoke-access-tokens              destroys every access token issued so far
//        (the refresh tokens stay valid): the next use of one gets 401.
//   GET  /__test/stats                             {"token_requests": {<grant_type>: {"total",
//        "ok", "errors": {<error>: n}}}, "token_max_in_flight", "refresh_token_reuse",
//        "grants_revoked", "resource": {"ok", "rejected"}}.
//   ANY  /resource/...                             a protected resource: 200 JSON {"kind",
//        "client_id", "account_id", "scope", "body"} when the Authorization: Bearer token is a
//        live access token (user or client_credentials) of this server, "body" being the
//        request body it read (as text); 401 invalid_token otherwise.
// The provider's own userinfo endpoint, GET /me (needs the openid scope), works as a protected
// resource too.
import http from 'node:http';
import process from 'node:process';

import Provider from 'oidc-provider';

// The provider prints notices with console.info (stdout); stdout carries only the port line.
console.info = (...args) => console.error(...args);
console.log = (...args) => console.error(...args);

const k_service_secret = 'agentgw-test-client-secret';
const k_device_grant = 'urn:ietf:params:oauth:grant-type:device_code';

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const accessTokenTtl = Number.parseInt(option('--access-token-ttl', '3600'), 10);

const stats = {
  token_requests: {},
  token_max_in_flight: 0,
  refresh_token_reuse: 0,
  grants_revoked: 0,
  resource: { ok: 0, rejected: 0 },
};
let tokenInFlight = 0;
const accessTokens = new Set();  // every user access token issued (opaque: value = jti)

function countToken(grantType, error) {
  const entry = (stats.token_requests[grantType] ??= { total: 0, ok: 0, errors: {} });
  entry.total += 1;
  if (error) {
    entry.errors[error] = (entry.errors[error] ?? 0) + 1;
  } else {
    entry.ok += 1;
  }
}

function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'agentgw-device',
      token_endpoint_auth_method: 'none',
      grant_types: [k_device_grant, 'refresh_token'],
      response_types: [],
      redirect_uris: [],
    },
    {
      client_id: 'agentgw-service',
      client_secret: k_service_secret,
      token_endpoint_auth_method: 'client_secret_post',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: 'api:read',
    },
  ],
  scopes: ['openid', 'offline_access', 'api:read'],
  features: {
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
  },
  // Every token set of a client allowed the refresh_token grant gets a refresh token (the
  // default also wants the offline_access scope), and each use rotates it.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    async claims() {
      return { sub };
    },
  }),
  cookies: { keys: ['agentgw-test-only-cookie-key'] },
  ttl: {
    AccessToken: accessTokenTtl,
    ClientCredentials: accessTokenTtl,
    DeviceCode: 600,
    Grant: 86400,
    IdToken: 3600,
    Interaction: 3600,
    RefreshToken: 86400,
    Session: 86400,
  },
});
// Counts every token-endpoint request by grant type and outcome, and how many ran at once.
provider.use(async (ctx, next) => {
  if (ctx.method !== 'POST' || ctx.path !== '/token') {
    await next();
    return;
  }
  tokenInFlight += 1;
  stats.token_max_in_flight = Math.max(stats.token_max_in_flight, tokenInFlight);
  try {
    await next();
  } finally {
    tokenInFlight -= 1;
    const grantType = ctx.oidc?.params?.grant_type ?? 'unknown';
    const error = ctx.status >= 400 ? (ctx.body?.error ?? `http_${ctx.status}`) : null;
    countToken(grantType, error);
  }
});
provider.on('grant.error', (ctx, err) => {
  if (err?.error_detail === 'refresh token already used') {
    stats.refresh_token_reuse += 1;
  }
});
provider.on('grant.revoked', () => {
  stats.grants_revoked += 1;
});
provider.on('access_token.saved', (token) => {
  accessTokens.add(token.jti);
});

async function deviceCodeFor(userCode) {
  const normalized = userCode.toUpperCase().replace(/\W/g, '');
  return provider.DeviceCode.findByUserCode(normalized);
}

// Approves a device code for `accountId`, as the verification page would after a login and
// consent: a grant for the scopes the client asked for, bound to the code.
async function approve(code, accountId) {
  const scope = code.params?.scope ?? 'openid offline_access';
  const grant = new provider.Grant({ accountId, clientId: code.clientId });
  grant.addOIDCScope(scope);
  const grantId = await grant.save();
  Object.assign(code, {
    accountId,
    grantId,
    scope,
    authTime: Math.floor(Date.now() / 1000),
  });
  await code.save();
}

async function issueTokens(scope) {
  const grant = new provider.Grant({ accountId: 'test-user', clientId: 'agentgw-device' });
  grant.addOIDCScope(scope);
  const grantId = await grant.save();
  const code = new provider.DeviceCode({
    accountId: 'test-user',
    grantId,
    scope,
    clientId: 'agentgw-device',
    authTime: Math.floor(Date.now() / 1000),
  });
  const deviceCode = await code.save();
  const answer = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: k_device_grant,
      device_code: deviceCode,
      client_id: 'agentgw-device',
    }),
  });
  return { status: answer.status, body: await answer.json() };
}

async function resource(req, res) {
  const parts = [];
  for await (const part of req) {
    parts.push(part);
  }
  const auth = req.headers.authorization ?? '';
  const token = auth.startsWith('Bearer ') ? auth.slice(7) : '';
  let found;
  let kind;
  if (token) {
    found = await provider.AccessToken.find(token);
    kind = 'AccessToken';
    if (!found) {
      found = await provider.ClientCredentials.find(token);
      kind = 'ClientCredentials';
    }
  }
  if (!found) {
    stats.resource.rejected += 1;
    sendJson(res, 401, { error: 'invalid_token' }, {
      'WWW-Authenticate': 'Bearer error="invalid_token"',
    });
    return;
  }
  stats.resource.ok += 1;
  sendJson(res, 200, {
    kind,
    client_id: found.clientId,
    account_id: found.accountId ?? null,
    scope: found.scope ?? null,
    body: Buffer.concat(parts).toString('latin1'),
  });
}

async function testEndpoint(req, res, url) {
  const userCode = url.searchParams.get('user_code') ?? '';
  switch (`${req.method} ${url.pathname}`) {
    case 'POST /__test/approve': {
      const code = await deviceCodeFor(userCode);
      if (!code || !code.isValid) {
        sendJson(res, 404, { error: 'no pending device code with that user code' });
        return;
      }
      await approve(code, url.searchParams.get('account') ?? 'test-user');
      sendJson(res, 200, { approved: userCode });
      return;
    }
    case 'POST /__test/deny': {
      const code = await deviceCodeFor(userCode);
      if (!code || !code.isValid) {
        sendJson(res, 404, { error: 'no pending device code with that user code' });
        return;
      }
      Object.assign(code, { error: 'access_denied', errorDescription: 'the user said no' });
      await code.save();
      sendJson(res, 200, { denied: userCode });
      return;
    }
    case 'POST /__test/tokens': {
      const { status, body } = await issueTokens(
        url.searchParams.get('scope') ?? 'openid offline_access',
      );
      sendJson(res, status, body);
      return;
    }
    case 'POST /__test/revoke-access-tokens': {
      let revoked = 0;
      for (const jti of accessTokens) {
        const token = await provider.AccessToken.find(jti);
        if (token) {
          await token.destroy();
          revoked += 1;
        }
      }
      accessTokens.clear();
      sendJson(res, 200, { revoked });
      return;
    }
    case 'GET /__test/stats':
      sendJson(res, 200, stats);
      return;
    default:
      sendJson(res, 404, { error: 'unknown test endpoint' });
  }
}

const handleProvider = provider.callback();
server.on('request', (req, res) => {
  const url = new URL(req.url, issuer);
  let handler;
  if (url.pathname.startsWith('/__test/')) {
    handler = testEndpoint(req, res, url);
  } else if (url.pathname === '/resource' || url.pathname.startsWith('/resource/')) {
    handler = resource(req, res);
  } else {
    handleProvider(req, res);
    return;
  }
  // Request bodies of the test endpoints are not used, but are drained for keep-alive.
  req.resume();
  handler.catch((err) => {
    console.error('oidc_server:', err);
    if (!res.headersSent) {
      sendJson(res, 500, { error: 'server_error', error_description: String(err) });
    } else {
      res.destroy();
    }
  });
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}

process.stdout.write(`listening ${port} ${issuer}\n`);
