// API keys: create one (shown once, with a copy button), list them, revoke.
import { useState } from "react";
import { all, api, tenantPath, type ApiKey, type ApiKeyCreated } from "../api/client";
import {
  Badge,
  CopyButton,
  Empty,
  ErrorNotice,
  Field,
  PageTitle,
  ScrollBox,
  buttonClass,
  inputClass,
  secondaryButtonClass,
  useLoad,
} from "../components/ui";
import { useForm } from "../components/useForm";

const RESOURCES = ["domains", "campaigns", "smtp_servers", "billing", "audit_log", "webhooks", "gdpr"];

export default function ApiKeys({ tenant }: { tenant: string }) {
  const path = tenantPath(tenant, "api-keys");
  const keys = useLoad(() => all<ApiKey>(path), [path]);
  const [created, setCreated] = useState<ApiKeyCreated | null>(null);
  const [error, setError] = useState<unknown>(null);

  async function revoke(key: ApiKey) {
    if (!window.confirm(`Revoke the key "${key.name}"? Programs using it stop working at once.`)) return;
    setError(null);
    try {
      await api("DELETE", `${path}/${key.id}`);
      await keys.reload();
    } catch (caught) {
      setError(caught);
    }
  }

  return (
    <>
      <PageTitle>API keys</PageTitle>
      <CreateKey
        path={path}
        onCreated={(key) => {
          setCreated(key);
          void keys.reload();
        }}
      />
      {created && (
        <section aria-labelledby="new-key" className="mt-4 rounded border border-green-400 bg-green-50 p-4" role="status">
          <h2 id="new-key" className="font-semibold">
            Your new key "{created.name}"
          </h2>
          <p className="text-sm">Copy it now: it is shown this once and cannot be shown again.</p>
          <div className="mt-2 flex flex-wrap items-center gap-2">
            <code data-testid="new-key" className="break-all rounded bg-white p-2">
              {created.key}
            </code>
            <CopyButton text={created.key} label="the new API key" />
            <button type="button" className={secondaryButtonClass} onClick={() => setCreated(null)}>
              Done
            </button>
          </div>
        </section>
      )}
      <ErrorNotice error={keys.error ?? error} />
      {keys.data && keys.data.length === 0 && (
        <Empty title="No API key yet">
          Create a key above for each program that calls the API, with only the scopes it needs.
        </Empty>
      )}
      {keys.data && keys.data.length > 0 && (
        <ScrollBox label="API keys" className="mt-4 rounded border border-slate-300 bg-white">
          <table className="w-full text-left text-sm">
            <caption className="sr-only">API keys</caption>
            <thead>
              <tr className="border-b border-slate-300">
                <th scope="col" className="p-2">Name</th>
                <th scope="col" className="p-2">Key</th>
                <th scope="col" className="p-2">Scopes</th>
                <th scope="col" className="p-2">Last used</th>
                <th scope="col" className="p-2"><span className="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {keys.data.map((k) => (
                <tr key={k.id} className="border-b border-slate-200">
                  <td className="p-2">{k.name}</td>
                  <td className="p-2 font-mono">{k.prefix}…</td>
                  <td className="p-2">{k.scopes.join(", ")}</td>
                  <td className="p-2">{k.lastUsedAt ? new Date(k.lastUsedAt).toLocaleString() : "Never"}</td>
                  <td className="p-2">
                    {k.revokedAt ? (
                      <Badge tone="none">Revoked</Badge>
                    ) : (
                      <button type="button" className={secondaryButtonClass} onClick={() => void revoke(k)}>
                        Revoke {k.name}
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </ScrollBox>
      )}
    </>
  );
}

function CreateKey({ path, onCreated }: { path: string; onCreated: (key: ApiKeyCreated) => void }) {
  const form = useForm({ name: "", scopes: ["domains:read", "campaigns:read"] });
  const { values, set } = form;
  const send = form.submit(async ({ name, scopes }) => {
    const key = await api<ApiKeyCreated>("POST", path, { name, scopes });
    set({ name: "" });
    onCreated(key);
  });

  function toggle(scope: string, on: boolean) {
    set({ scopes: on ? [...values.scopes, scope] : values.scopes.filter((s) => s !== scope) });
  }

  const { field, other } = form.errors({ name: ["name"], scopes: ["scopes"] });
  const nameError = field.name;
  const scopesError = field.scopes;
  return (
    <form onSubmit={send} className="flex flex-col gap-3 rounded border border-slate-300 bg-white p-4" noValidate>
      <Field id="key-name" label="Key name" hint="What the key is for, e.g. CRM sync." error={nameError}>
        {(aria) => <input {...aria} name="name" className={inputClass} value={values.name} onChange={(e) => set({ name: e.target.value })} />}
      </Field>
      <fieldset aria-describedby={scopesError ? "scopes-error" : undefined}>
        <legend className="text-sm font-medium">Scopes</legend>
        <div className="mt-1 grid grid-cols-1 gap-1 sm:grid-cols-2 lg:grid-cols-4">
          {RESOURCES.flatMap((r) =>
            ["read", "write"].map((a) => {
              const scope = `${r}:${a}`;
              return (
                <label key={scope} className="flex items-center gap-2 text-sm">
                  <input type="checkbox" checked={values.scopes.includes(scope)} onChange={(e) => toggle(scope, e.target.checked)} />
                  {scope}
                </label>
              );
            }),
          )}
        </div>
        {scopesError && (
          <p id="scopes-error" role="alert" className="text-sm text-red-700">
            {scopesError}
          </p>
        )}
      </fieldset>
      <ErrorNotice error={other} />
      <div>
        <button type="submit" className={buttonClass} disabled={form.busy}>
          Create key
        </button>
      </div>
    </form>
  );
}
