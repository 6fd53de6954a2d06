// A local OAuth2/OpenID Connect provider for kubegate's tests (tests/common/oidc.rs starts it).
//
// npm `oauth2-mock-server` issues the signed tokens, serves the JWKS and does the
// authorization-code round trip without a login page. This file wraps it so that it
// behaves like a real provider where kubegate's login depends on it:
//
// - the user who logs in next is set with `POST /__control/user` (JSON: sub, email,
//   preferred_username, name, groups, login, id, deny, id_token_claims); it stays until
//   set again. `deny: true` makes /authorize answer `error=access_denied` (consent refused);
//   `id_token_claims` are merged into the ID token last (to forge a wrong nonce, audience...);
//   `id_token_alg: "HS256"` signs the ID token with HMAC-SHA256 keyed by the client secret
//   (what a provider that offers symmetric ID tokens does) instead of the signing key,
//   `id_token_alg: "none"` leaves it unsigned (an empty signature);
// - `POST /__control/rotate-keys` (JSON, optional: alg, default RS256; publish, default
//   true) makes a new signing key, with a new `kid`, the only one tokens are signed with
//   from then on; published, it replaces the old key in the JWKS (a key rotation); with
//   `publish: false` the JWKS keeps the old key only (tokens signed with a key nobody
//   can fetch). Answers {kid, kids} (the key ids the JWKS now lists);
// - /authorize refuses an unknown client_id (400, no redirect, as providers do) and a
//   request without PKCE S256 (redirect with error=invalid_request);
// - /token checks the client secret (HTTP Basic or form), that the code exists, is used
//   once and is at most 60 s old, that redirect_uri and client_id match the authorize
//   request, and the PKCE code_verifier (the mock alone accepts a missing verifier);
// - the ID token carries the authorize request's nonce, sub, email, email_verified,
//   preferred_username, name and groups of the user bound to the code; aud is the client id;
//   at_hash is the hash of the access token of the same response (as OIDC Core 3.1.3.6
//   says; an `id_token_claims` at_hash replaces it);
// - GitHub: /login/oauth/authorize and /login/oauth/access_token are the same endpoints
//   as /authorize and /token, and /api/v3/user, /api/v3/user/emails, /api/v3/user/orgs,
//   /api/v3/user/teams answer for the access token's user (`Authorization: Bearer|token`,
//   else 401). A group "acme" is the org acme; "acme/admins" is the team admins of acme;
// - GET /__control/requests lists the authorize, token and JWKS requests seen (no secrets).
//
// Usage: node oidc-provider.mjs [--port 0] [--client-id ID] [--client-secret SECRET]
// Prints one JSON line {"issuer": "...", "port": N} on stdout once it listens.

import { createHash, createHmac } from "node:crypto";
import { createServer } from "node:http";
import { OAuth2Issuer, OAuth2Service } from "oauth2-mock-server";

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const clientId = arg("client-id", "kubegate");
const clientSecret = arg("client-secret", "kubegate-secret");
const port = Number(arg("port", "0"));
const CODE_LIFETIME_MS = 60_000;

let user = {
  sub: "alice-sub",
  email: "alice@example.org",
  preferred_username: "alice",
  name: "Alice Example",
  groups: ["acme", "acme/admins"],
  login: "alice",
  deny: false,
};

const codes = new Map(); // code -> {user, clientId, redirectUri, challenge, method, nonce, issued, used}
const accessTokens = new Map(); // access token -> user
const requests = []; // what the provider saw, for tests to check

const issuer = new OAuth2Issuer();
// the key tokens are signed with, and the public keys the JWKS lists; the mock's own
// store keeps every key ever made and picks them in turn, so the choice is made here
let signingKid = (await issuer.keys.generate("RS256")).kid;
let publishedKids = [signingKid];
const buildToken = issuer.buildToken.bind(issuer);
issuer.buildToken = (opts) => buildToken({ ...opts, kid: signingKid });
const service = new OAuth2Service(issuer);
// the token endpoint builds the access token, then the ID token, for the same request:
// keep the first so that the ID token's at_hash can name it
const serviceBuildToken = service.buildToken.bind(service);
service.buildToken = async (req, ...rest) => {
  const token = await serviceBuildToken(req, ...rest);
  req.kubegateAccessToken ??= token;
  return token;
};

// OIDC Core 3.1.3.6: the left half of the access token's SHA-256 (RS256), base64url
function atHash(accessToken) {
  const digest = createHash("sha256").update(accessToken, "ascii").digest();
  return base64url(digest.subarray(0, digest.length / 2));
}

function base64url(data) {
  return Buffer.from(data).toString("base64url");
}

// The same header (kid, typ) and claims, signed HS256 with the client secret, or with
// alg "none" and no signature.
function resign(jwt, alg) {
  const [header, payload] = jwt.split(".");
  const newHeader = { ...JSON.parse(Buffer.from(header, "base64url").toString("utf8")), alg };
  const input = `${base64url(JSON.stringify(newHeader))}.${payload}`;
  if (alg === "none") return `${input}.`;
  const signature = createHmac("sha256", clientSecret).update(input).digest("base64url");
  return `${input}.${signature}`;
}

function numericId(login) {
  let h = 0;
  for (const c of login) h = (h * 31 + c.charCodeAt(0)) % 2_000_000_000;
  return h + 1;
}

function githubUser(u) {
  return { login: u.login, id: u.id ?? numericId(u.login), name: u.name ?? null, email: u.email ?? null };
}

function githubOrgs(u) {
  const orgs = new Set((u.groups ?? []).map((g) => g.split("/")[0]));
  return [...orgs].map((login) => ({ login, id: numericId(login) }));
}

function githubTeams(u) {
  return (u.groups ?? [])
    .filter((g) => g.includes("/"))
    .map((g) => {
      const [org, slug] = g.split("/", 2);
      return { slug, name: slug, id: numericId(g), organization: { login: org, id: numericId(org) } };
    });
}

function send(res, status, body, headers = {}) {
  const text = body === undefined ? "" : JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(text);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function redirectWithError(res, redirectUri, error, description, state) {
  const url = new URL(redirectUri);
  url.searchParams.set("error", error);
  url.searchParams.set("error_description", description);
  if (state) url.searchParams.set("state", state);
  res.writeHead(302, { Location: url.href });
  res.end();
}

function bearer(req) {
  const header = req.headers["authorization"] ?? "";
  const m = /^(?:bearer|token)\s+(\S+)$/i.exec(header);
  return m ? accessTokens.get(m[1]) : undefined;
}

function clientCredentials(req) {
  const header = req.headers["authorization"] ?? "";
  const m = /^basic\s+(\S+)$/i.exec(header);
  if (m) {
    const decoded = Buffer.from(m[1], "base64").toString("utf8");
    const i = decoded.indexOf(":");
    if (i < 0) return {};
    // RFC 6749 2.3.1: both parts are form-urlencoded inside Basic
    const dec = (s) => decodeURIComponent(s.replace(/\+/g, " "));
    return { id: dec(decoded.slice(0, i)), secret: dec(decoded.slice(i + 1)), method: "basic" };
  }
  return { id: req.body?.client_id, secret: req.body?.client_secret, method: "post" };
}

// An authorize request that passed the checks: remember who logs in with this code.
service.on("beforeAuthorizeRedirect", (redirect, req) => {
  const code = redirect.url.searchParams.get("code");
  if (!code) return;
  const q = req.query;
  codes.set(code, {
    user: structuredClone(user),
    clientId: q.client_id,
    redirectUri: q.redirect_uri,
    challenge: q.code_challenge,
    method: q.code_challenge_method,
    nonce: q.nonce,
    issued: Date.now(),
    used: false,
  });
});

// Claims of the user bound to the code, in both tokens; the ID token gets the overrides.
service.on("beforeTokenSigning", (token, req) => {
  const record = codes.get(req.body?.code);
  if (!record) return;
  const u = record.user;
  const claims = {
    sub: u.sub,
    email: u.email,
    email_verified: true,
    preferred_username: u.preferred_username,
    name: u.name,
    groups: u.groups,
  };
  for (const [k, v] of Object.entries(claims)) if (v !== undefined) token.payload[k] = v;
  const isIdToken = !("scope" in token.payload);
  if (isIdToken) {
    token.payload.aud = record.clientId;
    if (record.nonce !== undefined) token.payload.nonce = record.nonce;
    else delete token.payload.nonce;
    if (req.kubegateAccessToken) token.payload.at_hash = atHash(req.kubegateAccessToken);
    Object.assign(token.payload, u.id_token_claims ?? {});
  }
});

// The token request's checks, done where the mock lets us answer instead of it.
service.on("beforeResponse", (response, req) => {
  const body = req.body ?? {};
  const creds = clientCredentials(req);
  const record = codes.get(body.code);
  const fail = (status, error, description) => {
    response.statusCode = status;
    response.body = { error, error_description: description };
  };
  requests.push({
    endpoint: "token",
    grant_type: body.grant_type,
    client_auth: creds.method,
    has_code_verifier: typeof body.code_verifier === "string",
    redirect_uri: body.redirect_uri,
  });
  if (body.grant_type !== "authorization_code") {
    return fail(400, "unsupported_grant_type", "only authorization_code is supported");
  }
  if (creds.id !== clientId || creds.secret !== clientSecret) {
    return fail(401, "invalid_client", "unknown client or wrong client secret");
  }
  if (!record) return fail(400, "invalid_grant", "unknown authorization code");
  if (record.used) return fail(400, "invalid_grant", "authorization code already used");
  record.used = true;
  if (Date.now() - record.issued > CODE_LIFETIME_MS) {
    return fail(400, "invalid_grant", "authorization code expired");
  }
  if (record.clientId !== creds.id) return fail(400, "invalid_grant", "code issued to another client");
  if (record.redirectUri !== body.redirect_uri) {
    return fail(400, "invalid_grant", "redirect_uri differs from the authorize request");
  }
  // the mock checks a verifier that is present; a missing one must fail too
  if (record.challenge && typeof body.code_verifier !== "string") {
    return fail(400, "invalid_grant", "code_verifier required");
  }
  accessTokens.set(response.body.access_token, record.user);
  const alg = record.user.id_token_alg;
  if ((alg === "HS256" || alg === "none") && typeof response.body.id_token === "string") {
    response.body.id_token = resign(response.body.id_token, alg);
  }
});

service.on("beforeUserinfo", (response, req) => {
  const u = bearer(req);
  if (!u) {
    response.statusCode = 401;
    response.body = { error: "invalid_token" };
    return;
  }
  response.body = {
    sub: u.sub,
    email: u.email,
    email_verified: true,
    preferred_username: u.preferred_username,
    name: u.name,
    groups: u.groups,
  };
});

async function handle(req, res) {
  const url = new URL(req.url, issuer.url);
  const path = url.pathname.replace(/\/+$/, "") || "/";

  if (req.method === "POST" && path === "/__control/user") {
    try {
      const next = JSON.parse(await readBody(req));
      if (typeof next !== "object" || next === null) throw new Error("not an object");
      user = { deny: false, groups: [], ...next };
      user.login ??= user.preferred_username;
      return send(res, 200, user);
    } catch (e) {
      return send(res, 400, { error: String(e) });
    }
  }
  if (req.method === "GET" && path === "/__control/requests") return send(res, 200, requests);
  if (req.method === "POST" && path === "/__control/rotate-keys") {
    try {
      const text = await readBody(req);
      const opts = text.trim() === "" ? {} : JSON.parse(text);
      const key = await issuer.keys.generate(opts.alg ?? "RS256");
      signingKid = key.kid;
      if (opts.publish !== false) publishedKids = [key.kid];
      return send(res, 200, { kid: key.kid, kids: publishedKids });
    } catch (e) {
      return send(res, 400, { error: String(e) });
    }
  }

  if (req.method === "GET" && path === "/jwks") {
    requests.push({ endpoint: "jwks" });
    const keys = issuer.keys.toJSON().filter((k) => publishedKids.includes(k.kid));
    return send(res, 200, { keys });
  }

  if (req.method === "GET" && path === "/.well-known/openid-configuration") {
    const base = issuer.url;
    return send(res, 200, {
      issuer: base,
      authorization_endpoint: `${base}/authorize`,
      token_endpoint: `${base}/token`,
      userinfo_endpoint: `${base}/userinfo`,
      jwks_uri: `${base}/jwks`,
      end_session_endpoint: `${base}/endsession`,
      response_types_supported: ["code"],
      response_modes_supported: ["query"],
      grant_types_supported: ["authorization_code"],
      subject_types_supported: ["public"],
      id_token_signing_alg_values_supported: ["RS256"],
      token_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post"],
      code_challenge_methods_supported: ["S256"],
      scopes_supported: ["openid", "email", "profile", "groups"],
      claims_supported: ["sub", "iss", "aud", "exp", "iat", "nonce", "email", "email_verified", "preferred_username", "name", "groups"],
    });
  }

  if (req.method === "GET" && (path === "/authorize" || path === "/login/oauth/authorize")) {
    const q = Object.fromEntries(url.searchParams);
    requests.push({
      endpoint: "authorize",
      client_id: q.client_id,
      redirect_uri: q.redirect_uri,
      response_type: q.response_type,
      scope: q.scope,
      state: q.state,
      nonce: q.nonce,
      code_challenge_method: q.code_challenge_method,
      has_code_challenge: typeof q.code_challenge === "string",
    });
    if (q.client_id !== clientId) return send(res, 400, { error: "invalid_client", error_description: "unknown client_id" });
    let redirect;
    try {
      redirect = new URL(q.redirect_uri);
    } catch {
      return send(res, 400, { error: "invalid_request", error_description: "redirect_uri is not a URL" });
    }
    if (user.deny) return redirectWithError(res, redirect.href, "access_denied", "the user refused consent", q.state);
    if (!q.code_challenge || q.code_challenge_method !== "S256") {
      return redirectWithError(res, redirect.href, "invalid_request", "PKCE with code_challenge_method=S256 is required", q.state);
    }
    req.url = `/authorize${url.search}`;
    return service.requestHandler(req, res);
  }

  if (req.method === "POST" && path === "/login/oauth/access_token") {
    req.url = "/token";
    return service.requestHandler(req, res);
  }

  if (path.startsWith("/api/v3/")) {
    const u = bearer(req);
    if (!u) return send(res, 401, { message: "Requires authentication" });
    if (req.method !== "GET") return send(res, 404, { message: "Not Found" });
    switch (path) {
      case "/api/v3/user":
        return send(res, 200, githubUser(u));
      case "/api/v3/user/emails":
        return send(res, 200, u.email ? [{ email: u.email, primary: true, verified: true, visibility: "private" }] : []);
      case "/api/v3/user/orgs":
        return send(res, 200, githubOrgs(u));
      case "/api/v3/user/teams":
        return send(res, 200, githubTeams(u));
      default:
        return send(res, 404, { message: "Not Found" });
    }
  }

  return service.requestHandler(req, res);
}

const server = createServer((req, res) => {
  handle(req, res).catch((e) => {
    console.error("oidc-provider:", e);
    if (!res.headersSent) send(res, 500, { error: "server_error" });
  });
});
server.listen(port, "127.0.0.1", () => {
  const actual = server.address().port;
  issuer.url = `http://127.0.0.1:${actual}`;
  process.stdout.write(`${JSON.stringify({ issuer: issuer.url, port: actual })}\n`);
});
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
// the harness holds our stdin: when the test process dies, so do we
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
