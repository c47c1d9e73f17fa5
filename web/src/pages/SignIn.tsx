import { useState, type FormEvent } from "react";
import { ApiError, signIn } from "../api/client";
import { ErrorNotice, Field, buttonClass, fieldError, inputClass } from "../components/ui";

export function SignIn({ onSignedIn }: { onSignedIn: () => void }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [mfaCode, setMfaCode] = useState("");
  // The MFA seam: set when the API answers that a second factor is needed.
  const [needsMfa, setNeedsMfa] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await signIn(email, password, needsMfa ? mfaCode : undefined);
      onSignedIn();
    } catch (caught) {
      if (caught instanceof ApiError && caught.body.code.startsWith("mfa_")) setNeedsMfa(true);
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  const emailError = fieldError(error, "email");
  const passwordError = fieldError(error, "password");
  const mfaError = fieldError(error, "mfaCode", "mfa_code");
  const other = emailError || passwordError || mfaError ? null : error;
  return (
    <main className="flex min-h-screen items-center justify-center p-4">
      <form
        onSubmit={(e) => void submit(e)}
        className="flex w-full max-w-sm flex-col gap-4 rounded-lg border border-slate-300 bg-white p-6 shadow-sm"
        noValidate
      >
        <h1 className="text-2xl font-semibold">Sign in to PenguinMails</h1>
        <Field id="email" label="E-mail address" error={emailError}>
          {(aria) => (
            <input
              {...aria}
              type="email"
              name="email"
              autoComplete="username"
              required
              className={inputClass}
              value={email}
              onChange={(e) => setEmail(e.target.value)}
            />
          )}
        </Field>
        <Field id="password" label="Password" error={passwordError}>
          {(aria) => (
            <input
              {...aria}
              type="password"
              name="password"
              autoComplete="current-password"
              required
              className={inputClass}
              value={password}
              onChange={(e) => setPassword(e.target.value)}
            />
          )}
        </Field>
        {needsMfa && (
          <Field
            id="mfa"
            label="Authentication code"
            hint="The 6-digit code of your authenticator app, or a recovery code."
            error={mfaError}
          >
            {(aria) => (
              <input
                {...aria}
                name="mfaCode"
                inputMode="numeric"
                autoComplete="one-time-code"
                className={inputClass}
                value={mfaCode}
                onChange={(e) => setMfaCode(e.target.value)}
              />
            )}
          </Field>
        )}
        <ErrorNotice error={other} />
        <button type="submit" className={buttonClass} disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
