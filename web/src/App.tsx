// The shell: sign-in, then a tenant's pages under hash routes (#/overview, #/domains, ...), so
// the API's static mount serves one index.html and needs no fallback route.
import { lazy, Suspense, useEffect, useState } from "react";
import { api, signOut, signedIn, whenSignedOut, type Me } from "./api/client";
import { SignIn } from "./pages/SignIn";
import { ErrorNotice, useLoad } from "./components/ui";
// The overview (the first page) ships in the main bundle: its load is one round of requests.
import Overview from "./pages/Overview";

// The other pages load when first visited.
const Domains = lazy(() => import("./pages/Domains"));
const Campaigns = lazy(() => import("./pages/Campaigns"));
const CampaignNew = lazy(() => import("./pages/CampaignNew"));
const CampaignEdit = lazy(() => import("./pages/CampaignEdit"));
const ApiKeys = lazy(() => import("./pages/ApiKeys"));
const Contacts = lazy(() => import("./pages/Contacts"));
const Servers = lazy(() => import("./pages/Servers"));
const AuditLog = lazy(() => import("./pages/AuditLog"));
const Members = lazy(() => import("./pages/settings/Members"));
const Webhooks = lazy(() => import("./pages/settings/Webhooks"));
const Billing = lazy(() => import("./pages/settings/Billing"));
const Security = lazy(() => import("./pages/settings/Security"));
// The platform administrators' pages: one chunk, loaded by administrators only.
const admin = () => import("./pages/Admin");
const AdminTenants = lazy(() => admin().then((m) => ({ default: m.AdminTenants })));
const AdminPlans = lazy(() => admin().then((m) => ({ default: m.AdminPlans })));
const AdminQueues = lazy(() => admin().then((m) => ({ default: m.AdminQueues })));
const AdminInfrastructure = lazy(() => admin().then((m) => ({ default: m.AdminInfrastructure })));

const PAGES = [
  { path: "overview", label: "Overview", Page: Overview },
  { path: "domains", label: "Sending domains", Page: Domains },
  { path: "campaigns", label: "Campaigns", Page: Campaigns },
  { path: "campaigns/new", label: "New campaign", Page: CampaignNew },
  { path: "api-keys", label: "API keys", Page: ApiKeys },
  { path: "contacts", label: "Contacts", Page: Contacts },
  { path: "servers", label: "SMTP servers", Page: Servers },
  { path: "audit-log", label: "Audit log", Page: AuditLog },
  // The settings pages: one "Settings" entry in the main navigation, their own tabs inside.
  { path: "settings/members", label: "Members", Page: Members },
  { path: "settings/webhooks", label: "Webhooks", Page: Webhooks },
  { path: "settings/billing", label: "Billing", Page: Billing },
  { path: "settings/security", label: "Security", Page: Security },
] as const;

const SETTINGS = "settings/";
// The main navigation: every page but the settings tabs after the first (shown as "Settings").
const NAV = PAGES.filter(
  (p) => (!p.path.startsWith(SETTINGS) || p.path === `${SETTINGS}members`) && p.path !== "campaigns/new",
);
// Shown in the navigation to platform administrators only; the API refuses everyone else.
const ADMIN_PAGES = [
  { path: "admin-tenants", label: "Tenants", Page: AdminTenants },
  { path: "admin-plans", label: "Plans", Page: AdminPlans },
  { path: "admin-queues", label: "Queues", Page: AdminQueues },
  { path: "admin-infrastructure", label: "Infrastructure", Page: AdminInfrastructure },
] as const;

// A campaign's edit page (#/campaigns/<name>/edit): under Campaigns in the navigation.
const CAMPAIGN_EDIT = /^campaigns\/([^/]+)\/edit$/;

const TENANT_STORE = "penguinmails.tenant";
// Where invitation e-mails link to (the API serves index.html there too: api/http/dashboard.py).
const ACCEPT_INVITATION = "/accept-invitation";
const AcceptInvitation = lazy(() => import("./pages/AcceptInvitation"));

function useHashRoute(): string {
  const read = () => window.location.hash.replace(/^#\/?/, "") || "overview";
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const changed = () => setRoute(read());
    window.addEventListener("hashchange", changed);
    // The hash may have changed between the first render and this listener (a link followed
    // while the page was still starting): read it again, or that page would never show.
    changed();
    return () => window.removeEventListener("hashchange", changed);
  }, []);
  return route;
}

export function App() {
  const [authed, setAuthed] = useState(signedIn());
  useEffect(() => whenSignedOut(() => setAuthed(false)), []);
  if (window.location.pathname === ACCEPT_INVITATION)
    return (
      <Suspense fallback={<p className="p-4">Loading…</p>}>
        <AcceptInvitation
          onJoined={(tenant) => {
            // Into the dashboard, on the tenant just joined.
            sessionStorage.setItem(TENANT_STORE, tenant);
            window.location.assign("/#/overview");
          }}
        />
      </Suspense>
    );
  if (!authed) return <SignIn onSignedIn={() => setAuthed(true)} />;
  return <Shell onSignedOut={() => setAuthed(false)} />;
}

function Shell({ onSignedOut }: { onSignedOut: () => void }) {
  const route = useHashRoute();
  const me = useLoad(() => api<Me>("GET", "/v1/me"), []);
  // The tenant last shown in this tab: its page loads while /v1/me is still on its way.
  const [chosen, setChosen] = useState<string | null>(sessionStorage.getItem(TENANT_STORE));
  const tenants = me.data?.memberships ?? [];
  const member = me.data === null || tenants.some((m) => m.tenant === chosen);
  const tenant = (member ? chosen : null) ?? tenants[0]?.tenant ?? null;
  useEffect(() => {
    if (tenant) sessionStorage.setItem(TENANT_STORE, tenant);
  }, [tenant]);
  const isAdmin = me.data?.platformAdmin === true;
  const adminPage = ADMIN_PAGES.find((p) => p.path === route);
  const editing = CAMPAIGN_EDIT.exec(route);
  const current = adminPage ?? PAGES.find((p) => p.path === (editing ? "campaigns" : route)) ?? PAGES[0];
  const nav: readonly { path: string; label: string }[] = isAdmin ? [...NAV, ...ADMIN_PAGES] : NAV;

  useEffect(() => {
    document.title = `${editing ? "Edit campaign" : current.label} · PenguinMails`;
    // Move focus to the page's heading on navigation, as a screen reader user expects.
    document.getElementById("main")?.focus();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [current, route]);

  return (
    <div className="min-h-screen">
      <a
        href="#main"
        onClick={(e) => {
          e.preventDefault();
          document.getElementById("main")?.focus();
        }}
        className="sr-only focus:not-sr-only focus:absolute focus:left-2 focus:top-2 focus:bg-white focus:p-2"
      >
        Skip to content
      </a>
      <header className="border-b border-slate-300 bg-white">
        <div className="mx-auto flex max-w-6xl flex-wrap items-center gap-x-4 gap-y-2 px-4 py-3">
          <span className="text-lg font-bold text-blue-800">PenguinMails</span>
          <nav aria-label="Main" className="order-3 w-full sm:order-none sm:w-auto">
            <ul className="flex flex-wrap gap-1">
              {nav.map((p) => {
                const settings = p.path.startsWith(SETTINGS);
                const here = settings ? current.path.startsWith(SETTINGS) : p.path === current.path;
                return (
                  <li key={p.path}>
                    <a
                      href={`#/${p.path}`}
                      // A settings tab is the page (its own navigation says so): this is its section.
                      aria-current={here ? (settings ? "true" : "page") : undefined}
                      className="block whitespace-nowrap rounded px-3 py-2 text-sm font-medium hover:bg-slate-100 aria-[current=page]:bg-blue-100 aria-[current=page]:text-blue-900 aria-[current=true]:bg-blue-100 aria-[current=true]:text-blue-900"
                    >
                      {settings ? "Settings" : p.label}
                    </a>
                  </li>
                );
              })}
            </ul>
          </nav>
          <div className="ml-auto flex items-center gap-2">
            {tenants.length > 1 && (
              <>
                <label htmlFor="tenant" className="text-sm">
                  Tenant
                </label>
                <select
                  id="tenant"
                  className="rounded border border-slate-400 px-2 py-1 text-sm"
                  value={tenant ?? ""}
                  onChange={(e) => setChosen(e.target.value)}
                >
                  {tenants.map((m) => (
                    <option key={m.tenant} value={m.tenant}>
                      {m.tenant}
                    </option>
                  ))}
                </select>
              </>
            )}
            {tenants.length === 1 && <span className="text-sm text-slate-700">{tenant}</span>}
            <button
              type="button"
              className="rounded px-3 py-1.5 text-sm font-medium hover:bg-slate-100"
              onClick={() => void signOut().finally(onSignedOut)}
            >
              Sign out
            </button>
          </div>
        </div>
      </header>
      <main id="main" tabIndex={-1} className="relative mx-auto max-w-6xl px-4 py-6 outline-none">
        <ErrorNotice error={me.error} />
        {adminPage && me.data && !isAdmin && (
          <p role="alert">This page is for platform administrators only.</p>
        )}
        {adminPage && isAdmin && (
          <Suspense fallback={<p>Loading…</p>}>
            <adminPage.Page />
          </Suspense>
        )}
        {!adminPage && me.data && tenant === null && (
          <p>
            You are not a member of any tenant yet. Ask an owner of your organisation's tenant to
            add you, then sign in again.
          </p>
        )}
        {!adminPage && tenant && (
          <Suspense fallback={<p>Loading…</p>}>
            <TenantPage route={route} tenant={tenant} />
          </Suspense>
        )}
      </main>
    </div>
  );
}

function TenantPage({ route, tenant }: { route: string; tenant: string }) {
  const editing = CAMPAIGN_EDIT.exec(route);
  if (editing) return <CampaignEdit key={`${tenant}/${route}`} tenant={tenant} name={decodeURIComponent(editing[1])} />;
  const { Page } = PAGES.find((p) => p.path === route) ?? PAGES[0];
  return <Page key={tenant} tenant={tenant} />;
}
