// The dashboard's only door to PenguinMails: the customer API under /v1, same origin.
// Bodies are typed by src/api/schema.d.ts, generated from the API's OpenAPI document
// (`make web-types`; `make test` fails when it differs from what the API serves).
import type { components } from "./schema";

export type Schemas = components["schemas"];
export type ErrorBody = Schemas["ErrorBody"];
export type Tokens = Schemas["Tokens"];
export type Me = Schemas["Me"];
export type SendingDomain = Schemas["SendingDomainOut"];
export type Campaign = Schemas["CampaignOut"];
export type SmtpServer = Schemas["SmtpServerOut"];
export type ApiKey = Schemas["ApiKey"];
export type ApiKeyCreated = Schemas["ApiKeyCreated"];
export type Usage = Schemas["Usage"];
export type DeliveryDays = Schemas["DeliveryDays"];
export type DeliveryDay = Schemas["DeliveryDay"];
export type OverviewData = Schemas["Overview"];
export type Health = Schemas["Health"];
export type AdminTenant = Schemas["AdminTenant"];
export type AdminPlan = Schemas["penguinmails__api__http__routes__admin__PlanOut"];
export type TenantQueue = Schemas["TenantQueue"];
export type AdminSmtpServer = Schemas["AdminSmtpServer"];
export type Condition = Schemas["Condition"];
export type ContactList = Schemas["ContactList"];
export type Contact = Schemas["Contact"];
export type ContactImport = Schemas["ContactImport"];
export type ImportLineError = Schemas["ImportLineError"];
export type Suppression = Schemas["Suppression"];
export type SuppressionAdded = Schemas["SuppressionAdded"];
export type SuppressionCheck = Schemas["CheckResult"];
export type BulkSuppressionResult = Schemas["BulkSuppressionResult"];
export type AuditEntry = Schemas["AuditEntry"];
export type Role = Schemas["Role"];
export type Member = Schemas["MemberOut"];
export type Invitation = Schemas["InvitationOut"];
export type InvitationCreated = Schemas["InvitationCreated"];
export type WebhookEndpoint = Schemas["WebhookEndpoint"];
export type WebhookEndpointCreated = Schemas["WebhookEndpointCreated"];
export type WebhookDelivery = Schemas["WebhookDelivery"];
export type EventType = Schemas["EventType"];
export type Invoice = Schemas["InvoiceOut"];
export type MfaStatus = Schemas["MfaStatus"];
export type MfaEnrollment = Schemas["MfaEnrollment"];
export type MfaChallenge = Schemas["MfaChallenge"];

/** An answer in the API's error envelope: `param` names the request field at fault. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: ErrorBody,
  ) {
    super(body.message);
  }
}

const STORE = "penguinmails.session";

interface Session {
  accessToken: string;
  refreshToken: string;
}

// Session storage: a sign-in lasts as long as the tab, never shared with other tabs.
function load(): Session | null {
  const raw = sessionStorage.getItem(STORE);
  return raw ? (JSON.parse(raw) as Session) : null;
}

function save(tokens: Tokens | null): void {
  if (tokens === null) {
    // Signed out: nothing of this sign-in stays in the tab (the tenant last shown included).
    sessionStorage.clear();
  } else
    sessionStorage.setItem(
      STORE,
      JSON.stringify({ accessToken: tokens.accessToken, refreshToken: tokens.refreshToken }),
    );
}

export function signedIn(): boolean {
  return load() !== null;
}

let onSignedOut: () => void = () => undefined;
export function whenSignedOut(callback: () => void): void {
  onSignedOut = callback;
}

async function envelope(response: Response): Promise<ApiError> {
  let body: ErrorBody = {
    type: "api_error",
    code: "unreadable",
    message: `The API answered ${response.status}.`,
  };
  try {
    const parsed = (await response.json()) as { error?: ErrorBody };
    if (parsed.error) body = parsed.error;
  } catch {
    // Not our envelope (a proxy's page): keep the generic message.
  }
  return new ApiError(response.status, body);
}

/** A body sent as it is (a file), with its media type, rather than as JSON. */
export class RawBody {
  constructor(
    readonly data: Blob,
    readonly type: string,
  ) {}
}

async function send(method: string, path: string, body?: unknown, extra?: Record<string, string>): Promise<Response> {
  const session = load();
  const headers: Record<string, string> = { Accept: "application/json", ...extra };
  if (session) headers.Authorization = `Bearer ${session.accessToken}`;
  if (body instanceof RawBody) headers["Content-Type"] = body.type;
  else if (body !== undefined) headers["Content-Type"] = "application/json";
  // Every write carries an Idempotency-Key, so a retried click cannot create twice.
  if (method === "POST") headers["Idempotency-Key"] = crypto.randomUUID();
  return fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : body instanceof RawBody ? body.data : JSON.stringify(body),
  });
}

let refreshing: Promise<boolean> | null = null;

async function refresh(): Promise<boolean> {
  const session = load();
  if (!session) return false;
  const response = await fetch("/v1/auth/refresh", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refreshToken: session.refreshToken }),
  });
  if (!response.ok) return false;
  save((await response.json()) as Tokens);
  return true;
}

declare global {
  interface Window {
    __pmPrefetched?: Record<string, Promise<Response>>;
  }
}

/** A GET that index.html started before the scripts loaded (the first page's requests), once:
 * later calls ask again. Null when none was started or it failed (the caller asks itself). */
async function prefetched(path: string): Promise<Response | null> {
  const started = window.__pmPrefetched?.[path];
  if (!started) return null;
  delete window.__pmPrefetched![path];
  try {
    const response = await started;
    return response.ok ? response : null; // e.g. 401: the normal path refreshes the token
  } catch {
    return null;
  }
}

/** Call the API; an expired access token is refreshed once (refresh tokens are single-use,
 * so concurrent calls share one refresh). `headers`: the request's own, e.g. If-Match. */
export async function api<T>(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<T> {
  const early = method === "GET" ? await prefetched(path) : null;
  if (early) return (await early.json()) as T;
  const response = await call(method, path, body, headers);
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

/** A resource and its ETag (the version of its spec), to send back as If-Match with an edit so
 * that an edit made on a stale copy is refused (412) rather than undoing someone's change. */
export async function versioned<T>(path: string): Promise<{ data: T; etag: string | null }> {
  const response = await call("GET", path);
  return { data: (await response.json()) as T, etag: response.headers.get("ETag") };
}

async function call(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Response> {
  let response = await send(method, path, body, headers);
  if (response.status === 401 && load()) {
    refreshing ??= refresh().finally(() => (refreshing = null));
    if (await refreshing) response = await send(method, path, body, headers);
    else {
      save(null);
      onSignedOut();
    }
  }
  if (!response.ok) throw await envelope(response);
  return response;
}

export interface Page<T> {
  data: T[];
  hasMore: boolean;
  nextCursor?: string | null;
}

/** Every item of a cursor-paginated list. */
export async function all<T>(path: string): Promise<T[]> {
  const items: T[] = [];
  let cursor: string | null | undefined = null;
  do {
    const query: string = cursor ? `?limit=100&cursor=${encodeURIComponent(cursor)}` : "?limit=100";
    const page: Page<T> = await api<Page<T>>("GET", path + query);
    items.push(...page.data);
    cursor = page.hasMore ? page.nextCursor : null;
  } while (cursor);
  return items;
}

/** One page of a cursor-paginated list, with the filters the list takes (unset ones left out). */
export function pageOf<T>(
  path: string,
  filters: Record<string, string | undefined>,
  cursor: string | null,
  limit = 50,
): Promise<Page<T>> {
  const query = new URLSearchParams({ limit: String(limit) });
  for (const [name, value] of Object.entries(filters)) if (value) query.set(name, value);
  if (cursor) query.set("cursor", cursor);
  return api<Page<T>>("GET", `${path}?${query}`);
}

/** Sign in with e-mail and password. For an account with MFA on the API answers a challenge
 * instead of tokens: it is returned, and `signInMfa` finishes the sign-in with a code. */
export async function signIn(email: string, password: string): Promise<MfaChallenge | null> {
  const response = await fetch("/v1/auth/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email, password }),
  });
  if (!response.ok) throw await envelope(response);
  const answer = (await response.json()) as Tokens | MfaChallenge;
  if ("mfaToken" in answer) return answer;
  save(answer);
  return null;
}

/** The second step: the challenge's token with the authenticator's code or a recovery code. */
export async function signInMfa(
  mfaToken: string,
  second: { code: string } | { recoveryCode: string },
): Promise<void> {
  const response = await fetch("/v1/auth/mfa", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ mfaToken, ...second }),
  });
  if (!response.ok) throw await envelope(response);
  save((await response.json()) as Tokens);
}

export async function signOut(): Promise<void> {
  try {
    await api<void>("POST", "/v1/auth/logout");
  } finally {
    save(null);
  }
}

export function tenantPath(tenant: string, rest: string): string {
  return `/v1/tenants/${encodeURIComponent(tenant)}/${rest}`;
}

/** The condition of the given type, e.g. Ready. */
export function condition(
  status: { conditions?: Condition[] } | null | undefined,
  type: string,
): Condition | undefined {
  return status?.conditions?.find((c) => c.type === type);
}
