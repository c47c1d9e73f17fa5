// Settings → Security: the signed-in user's two-step sign-in (enroll a TOTP authenticator with
// its secret or otpauth URI, confirm with a first code, the recovery codes shown once; disable
// with a code), and for admins the tenant's rule that every member signs in with MFA.
import { useState, type FormEvent } from "react";
import { ApiError, api, tenantPath, type MfaEnrollment, type MfaStatus } from "../../api/client";
import { SettingsNav } from "../../components/settings";
import {
  Badge,
  CopyButton,
  ErrorNotice,
  Field,
  PageTitle,
  buttonClass,
  fieldError,
  inputClass,
  secondaryButtonClass,
  useLoad,
} from "../../components/ui";

export default function Security({ tenant }: { tenant: string }) {
  const status = useLoad(() => api<MfaStatus>("GET", "/v1/me/mfa"), []);
  const [enrollment, setEnrollment] = useState<MfaEnrollment | null>(null);
  const [codes, setCodes] = useState<string[] | null>(null);
  const [error, setError] = useState<unknown>(null);

  async function enroll() {
    setError(null);
    try {
      setEnrollment(await api<MfaEnrollment>("POST", "/v1/me/mfa/enroll"));
    } catch (caught) {
      setError(caught);
    }
  }

  const mfa = status.data;
  return (
    <>
      <PageTitle>Security</PageTitle>
      <SettingsNav current="settings/security" />
      <section aria-labelledby="mfa" className="rounded border border-slate-300 bg-white p-4">
        <h2 id="mfa" className="flex flex-wrap items-center gap-2 text-lg font-semibold">
          Two-step sign-in (MFA)
          {mfa && (mfa.enabled ? <Badge tone="ok">On</Badge> : <Badge tone="none">Off</Badge>)}
        </h2>
        <ErrorNotice error={status.error ?? error} />
        {codes && <RecoveryCodes codes={codes} onDone={() => setCodes(null)} />}
        {mfa && !mfa.enabled && !enrollment && (
          <>
            <p className="text-sm">
              Sign-in asks for a code from an authenticator app (any TOTP app) after the password.
            </p>
            <button type="button" className={`${buttonClass} mt-2`} onClick={() => void enroll()}>
              Set up an authenticator
            </button>
          </>
        )}
        {enrollment && (
          <Confirm
            enrollment={enrollment}
            onConfirmed={(made) => {
              setEnrollment(null);
              setCodes(made);
              void status.reload();
            }}
          />
        )}
        {mfa?.enabled && !codes && (
          <>
            <p className="text-sm">
              Sign-in asks for a code from your authenticator app. Recovery codes left: {mfa.recoveryCodesLeft}.
            </p>
            <Disable onDisabled={() => void status.reload()} />
          </>
        )}
      </section>
      <TenantRule tenant={tenant} />
    </>
  );
}

function Confirm({ enrollment, onConfirmed }: { enrollment: MfaEnrollment; onConfirmed: (codes: string[]) => void }) {
  const [code, setCode] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const made = await api<{ recoveryCodes: string[] }>("POST", "/v1/me/mfa/confirm", { code: code.replace(/\s/g, "") });
      onConfirmed(made.recoveryCodes);
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  const codeError = fieldError(error, "code");
  return (
    <form onSubmit={(e) => void submit(e)} className="mt-2 flex flex-col gap-3" noValidate>
      <p className="text-sm">
        Add this account to your authenticator app: open the link on the device with the app, or type the secret in.
        The secret is shown this once.
      </p>
      <dl className="grid grid-cols-1 gap-2 text-sm sm:grid-cols-[auto_1fr]">
        <dt className="font-medium">Secret</dt>
        <dd className="flex flex-wrap items-center gap-2">
          <code data-testid="mfa-secret" className="break-all rounded bg-slate-100 p-1">
            {enrollment.secret}
          </code>
          <CopyButton text={enrollment.secret} label="the authenticator secret" />
        </dd>
        <dt className="font-medium">Link</dt>
        <dd className="flex flex-wrap items-center gap-2">
          <a data-testid="mfa-uri" href={enrollment.otpauthUri} className="break-all text-blue-800 underline">
            {enrollment.otpauthUri}
          </a>
          <CopyButton text={enrollment.otpauthUri} label="the otpauth link" />
        </dd>
      </dl>
      <Field id="mfa-confirm-code" label="Code from the app" hint="The 6 digits the app shows now." error={codeError}>
        {(aria) => (
          <input
            {...aria}
            name="code"
            inputMode="numeric"
            autoComplete="one-time-code"
            className={inputClass}
            value={code}
            onChange={(e) => setCode(e.target.value)}
          />
        )}
      </Field>
      <ErrorNotice error={codeError ? null : error} />
      <div>
        <button type="submit" className={buttonClass} disabled={busy}>
          Turn on MFA
        </button>
      </div>
    </form>
  );
}

function RecoveryCodes({ codes, onDone }: { codes: string[]; onDone: () => void }) {
  return (
    <div role="status" aria-labelledby="recovery" className="mt-2 rounded border border-green-400 bg-green-50 p-4">
      <h3 id="recovery" className="font-semibold">
        MFA is on. Your recovery codes
      </h3>
      <p className="text-sm">
        Keep them somewhere safe now: they are shown this once. Each signs you in once without the app.
      </p>
      <ul data-testid="recovery-codes" className="mt-2 grid grid-cols-1 gap-1 font-mono text-sm sm:grid-cols-2">
        {codes.map((c) => (
          <li key={c}>{c}</li>
        ))}
      </ul>
      <div className="mt-2 flex flex-wrap gap-2">
        <CopyButton text={codes.join("\n")} label="the recovery codes" />
        <button type="button" className={secondaryButtonClass} onClick={onDone}>
          I have saved them
        </button>
      </div>
    </div>
  );
}

function Disable({ onDisabled }: { onDisabled: () => void }) {
  const [recovery, setRecovery] = useState(false);
  const [code, setCode] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const typed = code.trim();
      await api("POST", "/v1/me/mfa/disable", recovery ? { recoveryCode: typed } : { code: typed.replace(/\s/g, "") });
      setCode("");
      onDisabled();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  const codeError = fieldError(error, "code", "recoveryCode");
  return (
    <form onSubmit={(e) => void submit(e)} className="mt-3 flex flex-col gap-3" noValidate>
      <h3 className="font-medium">Turn MFA off</h3>
      <Field
        id="mfa-disable-code"
        label={recovery ? "Recovery code" : "Code from the app"}
        hint="Proves it is you before the second step is removed."
        error={codeError}
      >
        {(aria) => (
          <input
            {...aria}
            name={recovery ? "recoveryCode" : "code"}
            autoComplete="one-time-code"
            className={inputClass}
            value={code}
            onChange={(e) => setCode(e.target.value)}
          />
        )}
      </Field>
      <ErrorNotice error={codeError ? null : error} />
      <div className="flex flex-wrap gap-2">
        <button type="submit" className={buttonClass} disabled={busy}>
          Turn off MFA
        </button>
        <button type="button" className={secondaryButtonClass} onClick={() => setRecovery(!recovery)}>
          {recovery ? "Use a code from the app" : "Use a recovery code"}
        </button>
      </div>
    </form>
  );
}

/** The tenant's rule (owners and admins): every member signs in with MFA. */
function TenantRule({ tenant }: { tenant: string }) {
  const path = tenantPath(tenant, "security");
  const rule = useLoad(() => api<{ mfaRequired: boolean }>("GET", path), [path]);
  const [error, setError] = useState<unknown>(null);
  // Members and viewers may not see it (403): the section is for those who may change it.
  if (rule.error instanceof ApiError && rule.error.status === 403) return null;

  async function set(mfaRequired: boolean) {
    setError(null);
    try {
      await api("PATCH", path, { mfaRequired });
      await rule.reload();
    } catch (caught) {
      setError(caught);
    }
  }

  return (
    <section aria-labelledby="tenant-rule" className="mt-4 rounded border border-slate-300 bg-white p-4">
      <h2 id="tenant-rule" className="text-lg font-semibold">
        MFA for everyone in {tenant}
      </h2>
      <ErrorNotice error={rule.error ?? error} />
      {rule.data && (
        <>
          <p className="text-sm">
            {rule.data.mfaRequired
              ? "Required: members who sign in without a second factor cannot reach this tenant."
              : "Not required: each member chooses. Turn your own MFA on and sign in with it before requiring it."}
          </p>
          <button type="button" className={`${secondaryButtonClass} mt-2`} onClick={() => void set(!rule.data?.mfaRequired)}>
            {rule.data.mfaRequired ? "Stop requiring MFA" : "Require MFA of every member"}
          </button>
        </>
      )}
    </section>
  );
}
