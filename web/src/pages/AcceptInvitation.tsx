// The page an invitation e-mail links to (/accept-invitation#token=...): which tenant and role
// the invitation offers and for which address (POST /v1/invitations/lookup, the token kept out
// of URLs the API sees), then accept it: with a new account's password when the address has
// none, or signed in as the invited address (the sign-in form, MFA included, when not yet).
import { useEffect, useState, type FormEvent } from "react";
import { ApiError, api, signIn, signOut, signedIn, type Schemas } from "../api/client";
import { SignIn } from "./SignIn";
import { ErrorNotice, Field, buttonClass, fieldError, inputClass } from "../components/ui";

type Preview = Schemas["InvitationPreview"];
type Accepted = Schemas["Accepted"];

const MIN_PASSWORD = 12;

const ROLES: Record<string, string> = {
  owner: "everything, owners included",
  admin: "everything but owners: resources, members, API keys, webhooks",
  member: "reads and writes domains, servers, campaigns and contacts",
  viewer: "reads everything, changes nothing",
};

/** The token after `#token=` in the link (a fragment: it never reaches a server's logs). */
function tokenOfLink(): string | null {
  return new URLSearchParams(window.location.hash.replace(/^#/, "")).get("token");
}

export default function AcceptInvitation({ onJoined }: { onJoined: (tenant: string) => void }) {
  const [token] = useState(tokenOfLink);
  const [preview, setPreview] = useState<Preview | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [authed, setAuthed] = useState(signedIn());
  const [signingIn, setSigningIn] = useState(false);

  useEffect(() => {
    document.title = "Accept an invitation · PenguinMails";
    if (!token) return;
    api<Preview>("POST", "/v1/invitations/lookup", { token }).then(setPreview, setError);
  }, [token]);

  if (signingIn && !authed)
    return (
      <SignIn
        onSignedIn={() => {
          setAuthed(true);
          setSigningIn(false);
        }}
      />
    );

  let body;
  if (!token) {
    body = <p>This link holds no invitation: open the link in the invitation e-mail again, whole.</p>;
  } else if (error) {
    body = <Refusal error={error} />;
  } else if (!preview) {
    body = <p aria-live="polite">Reading the invitation…</p>;
  } else {
    body = (
      <>
        <Offer preview={preview} />
        {authed ? (
          <AcceptSignedIn
            token={token}
            preview={preview}
            onJoined={onJoined}
            onSignedOut={() => setAuthed(false)}
          />
        ) : preview.accountExists ? (
          <div className="flex flex-col gap-3">
            <p>
              <strong>{preview.email}</strong> has an account: sign in to accept.
            </p>
            <button type="button" className={buttonClass} onClick={() => setSigningIn(true)}>
              Sign in to accept
            </button>
          </div>
        ) : (
          <CreateAccount token={token} preview={preview} onJoined={onJoined} />
        )}
      </>
    );
  }
  return (
    <main className="flex min-h-screen items-center justify-center p-4">
      <section className="flex w-full max-w-md flex-col gap-4 rounded-lg border border-slate-300 bg-white p-6 shadow-sm">
        <h1 className="text-2xl font-semibold">
          {preview ? `Join ${preview.tenantDisplayName ?? preview.tenant}` : "Accept an invitation"}
        </h1>
        {body}
      </section>
    </main>
  );
}

function Refusal({ error }: { error: unknown }) {
  if (error instanceof ApiError && error.status === 404)
    return (
      <p role="alert" className="rounded border border-red-300 bg-red-50 p-3 text-sm text-red-800">
        This invitation cannot be used: it was accepted or revoked already, or the link is incomplete. Ask whoever
        invited you to invite you again.
      </p>
    );
  return <ErrorNotice error={error} />;
}

function Offer({ preview }: { preview: Preview }) {
  return (
    <dl className="grid grid-cols-[auto_1fr] gap-x-4 gap-y-1 text-sm" aria-label="Invitation">
      <dt className="font-medium">Tenant</dt>
      <dd className="break-all" data-testid="invitation-tenant">
        {preview.tenant}
      </dd>
      <dt className="font-medium">Role</dt>
      <dd data-testid="invitation-role">
        {preview.role} <span className="text-slate-700">({ROLES[preview.role]})</span>
      </dd>
      <dt className="font-medium">For</dt>
      <dd className="break-all">{preview.email}</dd>
      <dt className="font-medium">Until</dt>
      <dd>{new Date(preview.expiresAt).toLocaleString()}</dd>
    </dl>
  );
}

function AcceptSignedIn(props: {
  token: string;
  preview: Preview;
  onJoined: (tenant: string) => void;
  onSignedOut: () => void;
}) {
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function accept() {
    setBusy(true);
    setError(null);
    try {
      const joined = await api<Accepted>("POST", "/v1/invitations/accept", { token: props.token });
      props.onJoined(joined.tenant);
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  // Signed in as another address: the API says so; signing out lets the invitee in.
  const otherUser = error instanceof ApiError && error.body.code === "invitation_email_mismatch";
  return (
    <div className="flex flex-col gap-3">
      <p>You are signed in: accept as this account.</p>
      <ErrorNotice error={error} />
      {otherUser ? (
        <button type="button" className={buttonClass} onClick={() => void signOut().finally(props.onSignedOut)}>
          Sign out, then accept as {props.preview.email}
        </button>
      ) : (
        <button type="button" className={buttonClass} disabled={busy} onClick={() => void accept()}>
          Accept and join {props.preview.tenant}
        </button>
      )}
    </div>
  );
}

function CreateAccount(props: { token: string; preview: Preview; onJoined: (tenant: string) => void }) {
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [again, setAgain] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [mismatch, setMismatch] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setError(null);
    setMismatch(undefined);
    if (password !== again) {
      setMismatch("The two passwords differ: type the same password twice.");
      return;
    }
    setBusy(true);
    try {
      const joined = await api<Accepted>("POST", "/v1/invitations/accept", {
        token: props.token,
        password,
        ...(name.trim() ? { displayName: name.trim() } : {}),
      });
      // The new account signs in at once with what was just typed.
      await signIn(props.preview.email, password);
      props.onJoined(joined.tenant);
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  const passwordError = fieldError(error, "password");
  const nameError = fieldError(error, "displayName");
  return (
    <form onSubmit={(e) => void submit(e)} className="flex flex-col gap-3" noValidate>
      <h2 className="text-lg font-semibold">Create your account</h2>
      <p className="text-sm">
        You sign in as <strong className="break-all">{props.preview.email}</strong> with this password.
      </p>
      <Field id="accept-name" label="Your name" hint="Optional: shown to the tenant's other members." error={nameError}>
        {(aria) => <input {...aria} name="name" autoComplete="name" className={inputClass} value={name} onChange={(e) => setName(e.target.value)} />}
      </Field>
      <Field id="accept-password" label="Password" hint={`At least ${MIN_PASSWORD} characters.`} error={passwordError}>
        {(aria) => (
          <input
            {...aria}
            type="password"
            name="password"
            autoComplete="new-password"
            className={inputClass}
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
        )}
      </Field>
      <Field id="accept-password-again" label="Password again" error={mismatch}>
        {(aria) => (
          <input
            {...aria}
            type="password"
            name="password-again"
            autoComplete="new-password"
            className={inputClass}
            value={again}
            onChange={(e) => setAgain(e.target.value)}
          />
        )}
      </Field>
      <ErrorNotice error={passwordError || nameError ? null : error} />
      <button type="submit" className={buttonClass} disabled={busy}>
        {busy ? "Joining…" : `Create the account and join ${props.preview.tenant}`}
      </button>
    </form>
  );
}
