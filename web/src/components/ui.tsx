// Small shared pieces: forms whose errors name the field, empty states, copy buttons.
import { useCallback, useEffect, useState, type ReactNode } from "react";
import { ApiError, type Page } from "../api/client";

/** Load something from the API; `reload` fetches again (after a write, or on a timer). */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[], everyMs?: number) {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<ApiError | Error | null>(null);
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const reload = useCallback(() => load().then(setData, setError), deps);
  useEffect(() => {
    void reload();
    if (!everyMs) return;
    const timer = setInterval(() => void reload(), everyMs);
    return () => clearInterval(timer);
  }, [reload, everyMs]);
  return { data, error, reload };
}

/** A cursor-paginated list shown page by page ("Show more"); `reset` starts again from the
 * first page (after a write, or when the filters change). */
export function usePaged<T>(load: (cursor: string | null) => Promise<Page<T>>, deps: unknown[]) {
  const [items, setItems] = useState<T[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<ApiError | Error | null>(null);
  const [busy, setBusy] = useState(false);
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const fetchPage = useCallback(load, deps);
  const take = useCallback(
    async (from: string | null, previous: T[]) => {
      setBusy(true);
      try {
        const page = await fetchPage(from);
        setItems([...previous, ...page.data]);
        setCursor(page.hasMore ? (page.nextCursor ?? null) : null);
        setError(null);
      } catch (caught) {
        setError(caught as Error);
      } finally {
        setBusy(false);
      }
    },
    [fetchPage],
  );
  const reset = useCallback(() => take(null, []), [take]);
  useEffect(() => {
    void reset();
  }, [reset]);
  const more = () => (cursor && items ? take(cursor, items) : Promise.resolve());
  return { items, error, busy, hasMore: cursor !== null, more, reset };
}

/** The button under a paged list, while there is more to show. */
export function ShowMore({ paged, what }: { paged: { hasMore: boolean; busy: boolean; more: () => Promise<void> }; what: string }) {
  if (!paged.hasMore) return null;
  return (
    <button type="button" className={`${secondaryButtonClass} mt-3`} disabled={paged.busy} onClick={() => void paged.more()}>
      Show more {what}
    </button>
  );
}

/** A labelled progress bar (0 to 100). */
export function ProgressBar({ label, percent }: { label: string; percent: number }) {
  const value = Math.max(0, Math.min(100, Math.round(percent)));
  return (
    <div
      role="progressbar"
      aria-label={label}
      aria-valuenow={value}
      aria-valuemin={0}
      aria-valuemax={100}
      className="h-3 w-full rounded bg-slate-200"
    >
      <div className="h-3 rounded bg-blue-700 transition-[width]" style={{ width: `${value}%` }} />
    </div>
  );
}

/** The error of a field (by the API's `param`, e.g. `spec.domain` or `name`), if it is one. */
export function fieldError(error: unknown, ...params: string[]): string | undefined {
  if (error instanceof ApiError && error.body.param && params.includes(error.body.param)) {
    return error.body.message;
  }
  return undefined;
}

export function Field(props: {
  id: string;
  label: string;
  error?: string;
  hint?: string;
  children: (aria: { id: string; "aria-invalid": boolean; "aria-describedby"?: string }) => ReactNode;
}) {
  const described = [props.hint && `${props.id}-hint`, props.error && `${props.id}-error`]
    .filter(Boolean)
    .join(" ");
  return (
    <div className="flex flex-col gap-1">
      <label htmlFor={props.id} className="text-sm font-medium">
        {props.label}
      </label>
      {props.children({
        id: props.id,
        "aria-invalid": Boolean(props.error),
        "aria-describedby": described || undefined,
      })}
      {props.hint && (
        <p id={`${props.id}-hint`} className="text-xs text-slate-600">
          {props.hint}
        </p>
      )}
      {props.error && (
        <p id={`${props.id}-error`} className="text-sm text-red-700" role="alert">
          {props.error}
        </p>
      )}
    </div>
  );
}

export const inputClass =
  "rounded border border-slate-400 bg-white px-3 py-2 text-base aria-[invalid=true]:border-red-700";
export const buttonClass =
  "rounded bg-blue-700 px-4 py-2 font-medium text-white hover:bg-blue-800 disabled:opacity-60";
export const secondaryButtonClass =
  "rounded border border-slate-400 bg-white px-3 py-1.5 text-sm font-medium hover:bg-slate-100";

/** An error that is not about one field (or whose field has no input on this form). */
export function ErrorNotice({ error }: { error: unknown }) {
  if (!error) return null;
  const message = error instanceof Error ? error.message : String(error);
  const field = error instanceof ApiError && error.body.param ? ` (field: ${error.body.param})` : "";
  return (
    <p role="alert" className="rounded border border-red-300 bg-red-50 p-3 text-sm text-red-800">
      {message}
      {field}
    </p>
  );
}

export function Empty({ title, children }: { title: string; children: ReactNode }) {
  return (
    <div className="rounded border border-dashed border-slate-400 bg-white p-6 text-center">
      <p className="font-medium">{title}</p>
      <div className="mt-2 text-sm text-slate-700">{children}</div>
    </div>
  );
}

export function CopyButton({ text, label }: { text: string; label: string }) {
  const [copied, setCopied] = useState(false);
  // The visible word starts the accessible name ("Copy value of ..."), as WCAG 2.5.3 asks.
  return (
    <button
      type="button"
      className={secondaryButtonClass}
      onClick={() =>
        void navigator.clipboard.writeText(text).then(() => {
          setCopied(true);
          setTimeout(() => setCopied(false), 2000);
        })
      }
    >
      {copied ? "Copied" : "Copy"}
      <span className="sr-only"> {label}</span>
    </button>
  );
}

/** A box that scrolls sideways on narrow screens: focusable, so keyboards can scroll it. */
export function ScrollBox({ label, className, children }: { label: string; className?: string; children: ReactNode }) {
  return (
    <div role="region" aria-label={label} tabIndex={0} className={`relative overflow-x-auto ${className ?? ""}`}>
      {children}
    </div>
  );
}

export function Badge({ tone, children }: { tone: "ok" | "warn" | "bad" | "none"; children: ReactNode }) {
  const tones = {
    ok: "bg-green-100 text-green-900",
    warn: "bg-amber-100 text-amber-900",
    bad: "bg-red-100 text-red-900",
    none: "bg-slate-200 text-slate-800",
  };
  return <span className={`rounded px-2 py-0.5 text-xs font-semibold ${tones[tone]}`}>{children}</span>;
}

export function PageTitle({ children }: { children: ReactNode }) {
  return <h1 className="mb-4 text-2xl font-semibold">{children}</h1>;
}
