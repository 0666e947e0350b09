// A real OpenID provider for jit-broker's web tests: panva's oidc-provider
// (OpenID-certified), in memory, on 127.0.0.1. Its devInteractions login page
// accepts any login name; the accounts below give each person's groups.
//
//   node provider.mjs PORT [userinfo]
//
// By default the configured claims (email, groups) are in the ID token.
// With `userinfo`, the provider follows OIDC Core 5.4 as oidc-provider does
// by default (and many certified providers do): the ID token of the code
// flow carries `sub` only, and the claims come from the UserInfo endpoint.
//
// RP-initiated logout is on (oidc-provider's default): the broker's
// sign-out sends the browser to /session/end, which asks to confirm and
// then returns to the broker's /signed-out page.
//
// Clients: `jit-broker` (the broker under test, on any 127.0.0.1 port: the
// tests bind it to port 0) and `other-app` (another application at the same
// provider: its ID tokens must not open the broker).
//
// With JIT_OIDC_FRESH_KEY=1 it signs with a key of its own made at start
// (a new `kid` each time), so that restarting it on the same port is a key
// rotation as an operator's provider would do one.
import Provider from "oidc-provider";
import { exportJWK, generateKeyPair } from "jose";

const [port, mode] = process.argv.slice(2);
const claimsFromUserinfoOnly = mode === "userinfo";
const issuer = `http://127.0.0.1:${port}`;

const groups = {
  "alice@example.com": ["cx-platform-admins"],
  "bob@example.com": ["cx-platform-leads"],
  "carol@example.com": ["cx-platform-leads", "soc"],
  "dave@example.com": ["cx-platform-admins"],
  "mallory@example.com": [],
};

async function freshKey() {
  const { privateKey } = await generateKeyPair("RS256", { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, kid: `rotated-${Date.now()}-${Math.random().toString(36).slice(2)}`, alg: "RS256", use: "sig" };
}
const jwks = process.env.JIT_OIDC_FRESH_KEY ? { keys: [await freshKey()] } : undefined;

const provider = new Provider(issuer, {
  ...(jwks ? { jwks } : {}),
  clients: [
    {
      client_id: "jit-broker",
      client_secret: "jit-broker-test-secret-0123456789",
      redirect_uris: ["http://127.0.0.1/auth/callback"],
      post_logout_redirect_uris: ["http://127.0.0.1/signed-out"],
      response_types: ["code"],
      grant_types: ["authorization_code"],
    },
    {
      client_id: "other-app",
      client_secret: "other-app-test-secret-0123456789",
      redirect_uris: ["http://127.0.0.1:9/cb"],
      response_types: ["code"],
      grant_types: ["authorization_code"],
    },
  ],
  pkce: { required: () => true },
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    groups: ["groups"],
  },
  scopes: ["openid", "email", "profile", "groups"],
  // false: the scope's claims go into the ID token too; true (the
  // library's default): only into UserInfo.
  conformIdTokenClaims: claimsFromUserinfoOnly,
  ttl: { IdToken: 600, AuthorizationCode: 60 },
  async findAccount(ctx, id) {
    const login = id.includes("@") ? id : `${id}@example.com`;
    return {
      accountId: id,
      async claims() {
        // One account whatever the case it is typed in (`ALICE@example.com`
        // is alice, with her groups), its email claim as typed, as an IdP
        // that keeps the spelling of the sign-in gives it.
        const person = login.toLowerCase();
        return { sub: person, email: login, email_verified: true, groups: groups[person] ?? (person.startsWith("bench") ? ["cx-bench"] : []) };
      },
    };
  },
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
});
// The broker under test listens on a port chosen at bind time: its callback
// on any 127.0.0.1 port is accepted (oidc-provider's redirect-URI recipe).
const { redirectUriAllowed } = provider.Client.prototype;
provider.Client.prototype.redirectUriAllowed = function (value) {
  const url = new URL(value);
  if (this.clientId === "jit-broker" && url.protocol === "http:" && url.hostname === "127.0.0.1"
      && url.pathname === "/auth/callback" && url.search === "") {
    return true;
  }
  return redirectUriAllowed.call(this, value);
};
const { postLogoutRedirectUriAllowed } = provider.Client.prototype;
provider.Client.prototype.postLogoutRedirectUriAllowed = function (value) {
  const url = new URL(value);
  if (this.clientId === "jit-broker" && url.protocol === "http:" && url.hostname === "127.0.0.1"
      && url.pathname === "/signed-out" && url.search === "") {
    return true;
  }
  return postLogoutRedirectUriAllowed.call(this, value);
};
provider.proxy = false;
provider.on("server_error", (ctx, err) => console.error("server_error", err));
provider.listen(Number(port), "127.0.0.1", () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
