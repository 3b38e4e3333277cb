// Page state in the URL: `#/<page>/<arg>?<query>`, so a reload, a bookmark
// or a shared link opens the same view.

export interface Route {
  page: string;
  arg: string;
  query: URLSearchParams;
}

export function current(): Route {
  const raw = window.location.hash.slice(1) || "/";
  const [path, q = ""] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean);
  return { page: parts[0] ?? "", arg: decodeURIComponent(parts.slice(1).join("/")), query: new URLSearchParams(q) };
}

/** Changes query keys (null removes) without reloading the page. */
export function setQuery(updates: Record<string, string | null>) {
  const r = current();
  for (const [k, v] of Object.entries(updates)) {
    if (v === null || v === "") r.query.delete(k);
    else r.query.set(k, v);
  }
  const q = r.query.toString();
  const path = `#/${r.page}${r.arg ? `/${encodeURIComponent(r.arg)}` : ""}`;
  history.replaceState(null, "", q ? `${path}?${q}` : path);
}
