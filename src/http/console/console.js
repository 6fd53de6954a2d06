// kubegate's console: pages over the documented REST API (/pipeline/api/v1/openapi.json),
// with the session cookie and its CSRF header (the csrfToken of GET /auth/session).
// No framework, no build step, nothing inline: the page's CSP allows scripts and styles
// from kubegate's origin only.

const API = "/pipeline/api/v1";

// Every Content-Security-Policy violation is counted into the page (a test reads it).
document.addEventListener("securitypolicyviolation", (e) => {
  const box = document.getElementById("csp-violations");
  if (!box) return;
  box.dataset.count = String(Number(box.dataset.count || 0) + 1);
  box.textContent += `${e.violatedDirective} ${e.blockedURI}\n`;
});

const state = { session: null, orgs: [], org: null, role: null, globalAdmin: false };

/** An answer of the API that is not a success: its status and its `message`. */
class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * The session ended: to the login (the provider's when there is one only, else the login
 * links of `/`), then back to this page (its fragment is kept for the way back).
 */
async function toLogin() {
  sessionStorage.setItem("kubegate.back", location.hash);
  let target = "/";
  try {
    const providers = await (await fetch("/auth/providers", { headers: { Accept: "application/json" } })).json();
    if (providers.length === 1) target = `${providers[0].login}?redirect=/`;
  } catch {
    /* the login links, then */
  }
  location.assign(target);
}

/** Calls the API; unsafe methods carry the CSRF header. Resolves to the JSON (or text). */
async function api(method, path, body, { csrf = false, text = false } = {}) {
  const headers = { Accept: text ? "*/*" : "application/json" };
  if (method !== "GET" || csrf) headers["X-CSRF-Token"] = state.session?.csrfToken ?? "";
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiFailure(0, `kubegate cannot be reached: ${e.message}`);
  }
  if (res.status === 401) {
    await toLogin();
    throw new ApiFailure(401, "the session has ended: log in again");
  }
  const raw = await res.text();
  let data = raw;
  if (!text) {
    try {
      data = raw ? JSON.parse(raw) : null;
    } catch {
      data = raw;
    }
  }
  if (!res.ok) {
    const message = (data && typeof data === "object" && data.message) || raw || res.statusText;
    throw new ApiFailure(res.status, message);
  }
  return data;
}

/** Builds an element: h("td", {class: "x", onclick: f}, "text", child...). */
function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "rect", "line", "text", "g", "title"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function main() {
  return document.getElementById("main");
}

function notice(message) {
  const box = document.getElementById("notice");
  box.textContent = message || "";
  box.hidden = !message;
}

/** What a failure says to a person: a 403 names what they may not do. */
function explain(error, doing) {
  if (error instanceof ApiFailure && error.status === 403) {
    return `You may not ${doing}: ${error.message}`;
  }
  return error.message || String(error);
}

function isAdmin() {
  return state.role === "admin" || state.role === "global-admin";
}

function time(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? value : d.toLocaleString();
}

/** A button that asks once more before it acts (no modal dialog). */
function confirmButton(label, action) {
  const button = h("button", { type: "button", class: "danger" }, label);
  let armed = null;
  button.addEventListener("click", async () => {
    if (!armed) {
      button.textContent = `Confirm: ${label.toLowerCase()}`;
      armed = setTimeout(() => {
        armed = null;
        button.textContent = label;
      }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.disabled = true;
    await action();
    button.disabled = false;
    button.textContent = label;
  });
  return button;
}

// ---------------------------------------------------------------------------------------
// Clusters

const DASHBOARD = "/proxy/api/v1/namespaces/kube-system/services/https:kubernetes-dashboard:/proxy/";

function clusterUrl(id = "") {
  return `${API}/orgs/${state.org}/clusters${id === "" ? "" : `/${id}`}`;
}

/** Marks the kubeconfig field (or the name) named by the API's error, and says which. */
function showFormError(form, error) {
  const box = form.querySelector(".error");
  box.textContent = explain(error, "change the clusters of this org");
  for (const field of form.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
  const message = error.message || "";
  const kubeconfig = /^invalid kubeconfig: (?:([^:]+): )?/.exec(message);
  let invalid = null;
  if (kubeconfig) {
    invalid = form.querySelector("textarea[name=kubeconfig]");
    const hint = form.querySelector(".field-hint");
    if (hint && kubeconfig[1]) hint.textContent = `Field to fix in the kubeconfig: ${kubeconfig[1]}`;
  } else if (/cluster name|^name/.test(message)) {
    invalid = form.querySelector("input[name=name]");
  } else if (/^context/.test(message)) {
    invalid = form.querySelector("input[name=context]");
  }
  if (invalid) {
    invalid.setAttribute("aria-invalid", "true");
    invalid.setAttribute("aria-describedby", box.id);
    invalid.focus();
  }
}

/** The kubeconfig fields: paste, or upload a file into the text area. */
function kubeconfigFields(prefix) {
  const area = h("textarea", { name: "kubeconfig", id: `${prefix}-kubeconfig`, required: true, spellcheck: "false" });
  const file = h("input", {
    type: "file",
    id: `${prefix}-file`,
    accept: ".yaml,.yml,.json,.conf,text/yaml,application/json",
    onchange: async () => {
      if (file.files[0]) area.value = await file.files[0].text();
    },
  });
  return [
    h("label", { class: "wide", for: area.id }, "Kubeconfig (paste it, or choose a file below)", area),
    h("label", { for: file.id }, "Kubeconfig file", file),
    h("p", { class: "field-hint" }),
  ];
}

function addClusterForm(reload) {
  const form = h(
    "form",
    { class: "panel", id: "add-cluster", "aria-labelledby": "add-cluster-title" },
    h("h2", { id: "add-cluster-title" }, "Add a cluster"),
    h("label", { for: "cluster-name" }, "Name", h("input", { name: "name", id: "cluster-name", required: true, pattern: "[a-z0-9._-]{1,63}" })),
    h("label", { for: "cluster-context" }, "Context (default: the current one)", h("input", { name: "context", id: "cluster-context" })),
    h("label", { for: "cluster-record" }, "Record exec sessions",
      h("select", { name: "recordSessions", id: "cluster-record" },
        h("option", { value: "off" }, "off"), h("option", { value: "tty" }, "with a terminal"), h("option", { value: "all" }, "all"))),
    h("label", { class: "check", for: "cluster-impersonate" }, h("input", { type: "checkbox", name: "impersonate", id: "cluster-impersonate" }), "Impersonate the person"),
    ...kubeconfigFields("cluster"),
    h("p", { class: "error", id: "add-cluster-error", role: "alert" }),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "add-cluster-submit" }, "Add the cluster")),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const body = {
      name: data.get("name"),
      kubeconfig: data.get("kubeconfig"),
      impersonate: data.get("impersonate") === "on",
      recordSessions: data.get("recordSessions"),
    };
    if (data.get("context")) body.context = data.get("context");
    try {
      await api("POST", clusterUrl(), body);
      form.reset();
      form.querySelector(".error").textContent = "";
      form.querySelector(".field-hint").textContent = "";
      for (const field of form.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
      await reload();
    } catch (error) {
      showFormError(form, error);
    }
  });
  return form;
}

function replaceCredentialsForm(cluster, reload) {
  const prefix = `replace-${cluster.id}`;
  const form = h(
    "form",
    { class: "panel", id: prefix },
    h("h2", {}, `New credentials for ${cluster.name}`),
    h("label", { for: `${prefix}-context` }, "Context (default: the current one)", h("input", { name: "context", id: `${prefix}-context` })),
    ...kubeconfigFields(prefix),
    h("p", { class: "error", id: `${prefix}-error`, role: "alert" }),
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Replace the credentials"),
      h("button", { type: "button", onclick: () => form.remove() }, "Cancel")),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const body = { kubeconfig: data.get("kubeconfig") };
    if (data.get("context")) body.context = data.get("context");
    try {
      await api("PUT", clusterUrl(cluster.id), body);
      await reload();
    } catch (error) {
      showFormError(form, error);
    }
  });
  return form;
}

/** Saves `text` as a file named `name` (a download of the page's own data). */
function save(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = h("a", { href: url, download: name, class: "hidden" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** A kubeconfig with a new token in it (it mints a token: a write, with the CSRF header). */
async function tokenKubeconfig(cluster) {
  try {
    const yaml = await api("GET", `${clusterUrl(cluster.id)}/config?credential=token`, undefined, { csrf: true, text: true });
    save(`kubeconfig-${cluster.name}-token.yaml`, yaml, "application/yaml");
    notice("");
  } catch (error) {
    notice(explain(error, `get a kubeconfig for ${cluster.name}`));
  }
}

function statusCell(cluster, dashboard) {
  const cell = h("td", { class: "status", "data-cluster": cluster.id }, h("span", { class: "muted" }, "checking…"));
  api("GET", `${clusterUrl(cluster.id)}/status`).then(
    (status) => {
      // the link only where the cluster runs the dashboard
      dashboard.hidden = !status.dashboard;
      cell.replaceChildren(
        status.reachable
          ? h("span", { class: "ok reachable" }, "reachable")
          : h("span", { class: "bad unreachable" }, "unreachable"),
        status.reachable ? h("div", { class: "version" }, `Kubernetes ${status.version ?? "?"}`) : h("div", { class: "muted reason" }, status.reason ?? ""),
      );
    },
    (error) => cell.replaceChildren(h("span", { class: "bad" }, explain(error, "see this cluster's status"))),
  );
  return cell;
}

async function clustersPage() {
  const page = h("div", { id: "clusters-page" }, h("h1", {}, `Clusters of org ${state.org}`));
  main().replaceChildren(page);
  const body = h("tbody");
  const table = h("table", { id: "clusters" },
    h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Server"), h("th", {}, "Status"), h("th", {}, "Actions"))), body);
  const editors = h("div");
  const reload = async () => {
    let clusters;
    try {
      clusters = await api("GET", clusterUrl());
    } catch (error) {
      body.replaceChildren(h("tr", {}, h("td", { colspan: 4, class: "error" }, explain(error, "list this org's clusters"))));
      return;
    }
    editors.replaceChildren();
    if (clusters.length === 0) {
      body.replaceChildren(h("tr", {}, h("td", { colspan: 4, class: "muted" }, "This org has no cluster yet.")));
    } else {
      body.replaceChildren(
        ...clusters.map((c) => {
          const dashboard = h("a", { href: `${clusterUrl(c.id)}${DASHBOARD}`, target: "_blank", rel: "noopener", class: "dashboard", hidden: true, title: "The Kubernetes dashboard of this cluster" }, "Dashboard");
          return h("tr", { "data-name": c.name },
            h("td", {}, h("b", {}, c.name), h("div", { class: "muted" }, `id ${c.id}`)),
            h("td", {}, h("code", {}, c.server ?? "(the stored kubeconfig does not parse)")),
            statusCell(c, dashboard),
            h("td", {}, h("div", { class: "actions" },
              h("a", { href: `${clusterUrl(c.id)}/config`, download: `kubeconfig-${c.name}.yaml`, class: "kubeconfig" }, "Kubeconfig"),
              h("button", { type: "button", class: "token-kubeconfig", title: "A kubeconfig holding a new long-lived token of yours, for CI systems", onclick: () => tokenKubeconfig(c) }, "Kubeconfig with a token"),
              dashboard,
              isAdmin() && h("button", { type: "button", class: "replace", onclick: () => {
                editors.replaceChildren(replaceCredentialsForm(c, reload));
                editors.querySelector("textarea").focus();
              } }, "Replace credentials"),
              isAdmin() && confirmButton("Delete", async () => {
                try {
                  await api("DELETE", clusterUrl(c.id));
                  await reload();
                } catch (error) {
                  notice(explain(error, `delete the cluster ${c.name}`));
                }
              }),
            )),
          );
        }),
      );
    }
  };
  page.append(
    h("p", {}, h("a", { href: `${API}/kubeconfig?org=${state.org}`, download: "kubeconfig.yaml", id: "kubeconfig-all" }, "Download a kubeconfig for all clusters"),
      " (kubectl logs in with ", h("code", {}, "kubegate credential"), ")."),
    table,
    editors,
  );
  if (isAdmin()) page.append(addClusterForm(reload));
  else page.append(h("p", { class: "muted" }, "Only the org's admins add, change or delete clusters."));
  await reload();
}

// ---------------------------------------------------------------------------------------
// Members

const ROLES = ["admin", "member"];

function roleSelect(id, current, label) {
  const roles = ROLES.includes(current) || !current ? ROLES : [...ROLES, current];
  return h("select", { name: "role", id, "aria-label": label }, ...roles.map((r) => h("option", { value: r, selected: r === current }, r)));
}

async function membersPage() {
  const page = h("div", { id: "members-page" }, h("h1", {}, `Members of org ${state.org}`));
  main().replaceChildren(page);
  if (!isAdmin()) {
    page.append(h("p", {}, "Only the org's admins see and change its members."));
    return;
  }
  const body = h("tbody");
  const error = h("p", { class: "error", role: "alert", id: "members-error" });
  const url = (user = "") => `${API}/orgs/${state.org}/members${user ? `/${encodeURIComponent(user)}` : ""}`;
  const reload = async () => {
    let members;
    try {
      members = await api("GET", url());
    } catch (e) {
      error.textContent = explain(e, "list the members of this org");
      return;
    }
    body.replaceChildren(
      ...members.map((m, i) => {
        const select = roleSelect(`member-role-${i}`, m.role, `Role of ${m.user}`);
        return h("tr", { "data-user": m.user },
          h("td", {}, m.user),
          h("td", {}, select),
          h("td", {}, h("div", { class: "actions" },
            h("button", { type: "button", class: "save-role", onclick: async () => {
              try {
                await api("PUT", url(m.user), { role: select.value });
                error.textContent = "";
                await reload();
              } catch (e) {
                error.textContent = explain(e, `change the role of ${m.user}`);
              }
            } }, "Change role"),
            confirmButton("Remove", async () => {
              try {
                await api("DELETE", url(m.user));
                await reload();
              } catch (e) {
                error.textContent = explain(e, `remove ${m.user}`);
              }
            }),
          )));
      }),
    );
  };
  const form = h("form", { class: "panel", id: "add-member", "aria-labelledby": "add-member-title" },
    h("h2", { id: "add-member-title" }, "Add a member"),
    h("label", { for: "member-user" }, "User (as kubegate names them: provider:user)", h("input", { name: "user", id: "member-user", required: true })),
    h("label", { for: "member-role" }, "Role", roleSelect("member-role", "member", null)),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Add")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    try {
      await api("PUT", url(data.get("user")), { role: data.get("role") });
      error.textContent = "";
      form.reset();
      await reload();
    } catch (err) {
      error.textContent = explain(err, "add members to this org");
    }
  });
  page.append(
    h("table", { id: "members" }, h("thead", {}, h("tr", {}, h("th", {}, "User"), h("th", {}, "Role"), h("th", {}, "Actions"))), body),
    error,
    form,
  );
  await reload();
}

// ---------------------------------------------------------------------------------------
// Tokens

async function tokensPage() {
  const page = h("div", { id: "tokens-page" }, h("h1", {}, "Your tokens"));
  main().replaceChildren(page);
  const body = h("tbody");
  const error = h("p", { class: "error", role: "alert", id: "tokens-error" });
  const shown = h("div", { id: "new-token" });
  const reload = async () => {
    let tokens;
    try {
      tokens = await api("GET", `${API}/tokens`);
    } catch (e) {
      error.textContent = explain(e, "list your tokens");
      return;
    }
    body.replaceChildren(
      ...tokens.map((t) =>
        h("tr", { "data-id": t.id },
          h("td", {}, t.name),
          h("td", {}, t.kind),
          h("td", {}, time(t.createdAt)),
          h("td", {}, time(t.expiresAt)),
          h("td", {}, t.revoked ? `revoked ${time(t.revokedAt)}` : "active"),
          h("td", {}, t.revoked ? "" : confirmButton("Revoke", async () => {
            try {
              await api("DELETE", `${API}/tokens/${encodeURIComponent(t.id)}`);
              await reload();
            } catch (e) {
              error.textContent = explain(e, "revoke this token");
            }
          })))),
    );
    if (tokens.length === 0) body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No token yet.")));
  };
  const form = h("form", { class: "panel", id: "create-token", "aria-labelledby": "create-token-title" },
    h("h2", { id: "create-token-title" }, "Create a token"),
    h("label", { for: "token-name" }, "What it is for", h("input", { name: "name", id: "token-name", required: true, maxlength: 200 })),
    h("label", { for: "token-ttl" }, "Lifetime (e.g. 24h, 90m; empty: the default)", h("input", { name: "ttl", id: "token-ttl" })),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const request = { name: data.get("name") };
    if (data.get("ttl")) request.ttl = data.get("ttl");
    try {
      const made = await api("POST", `${API}/tokens`, request);
      error.textContent = "";
      form.reset();
      const code = h("code", { id: "token-value" }, made.token);
      const copy = h("button", { type: "button", id: "copy-token", onclick: async () => {
        try {
          await navigator.clipboard.writeText(made.token);
          copy.textContent = "Copied";
        } catch {
          // no clipboard (plain HTTP): select it for Ctrl+C
          getSelection().selectAllChildren(code);
          copy.textContent = "Selected: press Ctrl+C";
        }
      } }, "Copy");
      shown.replaceChildren(h("div", { class: "secret", role: "status" },
        h("span", {}, `Token "${made.name}" (shown once, expires ${time(made.expiresAt)}):`), code, copy,
        h("button", { type: "button", onclick: () => shown.replaceChildren() }, "Done")));
      await reload();
    } catch (err) {
      error.textContent = explain(err, "create tokens");
    }
  });
  page.append(form, shown, error,
    h("table", { id: "tokens" }, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Kind"), h("th", {}, "Created"), h("th", {}, "Expires"), h("th", {}, "State"), h("th", {}, ""))), body));
  await reload();
}

// ---------------------------------------------------------------------------------------
// Audit trail

/** Draws the requests per minute, stacked by decision, as SVG. */
function drawChart(histogram) {
  const buckets = histogram.buckets;
  const width = 1000;
  const height = 180;
  const left = 40;
  const bottom = 20;
  const max = Math.max(1, ...buckets.map((b) => b.allow + b.deny + b.error));
  const barWidth = (width - left) / Math.max(1, buckets.length);
  const y = (n) => ((height - bottom - 6) * n) / max;
  const svg = h("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": "Requests per minute by decision", id: "audit-chart-svg" });
  svg.append(
    h("line", { class: "gridline", x1: left, x2: width, y1: height - bottom, y2: height - bottom }),
    h("line", { class: "gridline", x1: left, x2: width, y1: height - bottom - y(max), y2: height - bottom - y(max) }),
    h("text", { class: "axis", x: 2, y: height - bottom - y(max) + 10 }, String(max)),
    h("text", { class: "axis", x: 2, y: height - bottom }, "0"),
  );
  buckets.forEach((b, i) => {
    let base = height - bottom;
    const group = h("g", { class: "bucket", "data-time": b.time }, h("title", {}, `${time(b.time)}: ${b.allow} allowed, ${b.deny} denied, ${b.error} errors`));
    for (const decision of ["allow", "deny", "error"]) {
      const n = b[decision];
      if (!n) continue;
      const tall = y(n);
      base -= tall;
      group.append(h("rect", { class: decision, x: left + i * barWidth + 0.5, y: base, width: Math.max(1, barWidth - 1), height: tall }));
    }
    svg.append(group);
  });
  const label = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  svg.append(
    h("text", { class: "axis", x: left, y: height - 4 }, label(histogram.since)),
    h("text", { class: "axis", x: width, y: height - 4, "text-anchor": "end" }, label(histogram.until)),
  );
  const total = (d) => buckets.reduce((sum, b) => sum + b[d], 0);
  return h("div", { class: "chart", id: "audit-chart", "data-total": total("allow") + total("deny") + total("error") },
    h("div", { class: "legend" },
      h("span", {}, h("span", { class: "swatch swatch-allow" }), `allow ${total("allow")}`),
      h("span", {}, h("span", { class: "swatch swatch-deny" }), `deny ${total("deny")}`),
      h("span", {}, h("span", { class: "swatch swatch-error" }), `error ${total("error")}`),
      h("span", { class: "muted" }, "requests per minute")),
    svg);
}

/** Strips what a <pre> cannot show of a terminal's output: ANSI escapes, carriage returns. */
function plainTerminal(text) {
  return text
    .replace(/\x1b\][^\x07\x1b]*(\x07|\x1b\\)/g, "") // OSC (window titles)
    .replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, "") // CSI (colours, cursor)
    .replace(/\x1b[()][0-9A-Za-z]|\x1b[=>78]/g, "")
    .replace(/\r\n/g, "\n")
    .replace(/\r/g, "");
}

/** Plays an asciicast v2 recording into a <pre>, with its timing (idle capped at 2 s). */
function player(cast) {
  const lines = cast.split("\n").filter((l) => l.trim());
  let header = {};
  try {
    header = JSON.parse(lines[0]);
  } catch {
    /* shown without a header */
  }
  const events = lines.slice(1).map((l) => {
    try {
      return JSON.parse(l);
    } catch {
      return null;
    }
  }).filter((e) => Array.isArray(e) && e[1] === "o");
  const screen = h("pre", { class: "terminal", id: "player-screen", "aria-live": "off" });
  const button = h("button", { type: "button", id: "player-toggle" }, "Play");
  const progress = h("span", { class: "muted", id: "player-progress" }, `0 / ${events.length} outputs`);
  let next = 0;
  let timer = null;
  const step = () => {
    if (next >= events.length) {
      timer = null;
      button.textContent = "Play again";
      return;
    }
    const [at, , data] = events[next];
    screen.textContent += plainTerminal(data);
    screen.scrollTop = screen.scrollHeight;
    next += 1;
    progress.textContent = `${next} / ${events.length} outputs`;
    const wait = next < events.length ? Math.min(2, Math.max(0, events[next][0] - at)) : 0;
    timer = setTimeout(step, wait * 1000);
  };
  button.addEventListener("click", () => {
    if (timer) {
      clearTimeout(timer);
      timer = null;
      button.textContent = "Play";
      return;
    }
    if (next >= events.length) {
      next = 0;
      screen.textContent = "";
    }
    button.textContent = "Pause";
    step();
  });
  return h("section", { class: "panel", id: "player" },
    h("h2", {}, "Session recording"),
    h("p", { class: "muted" }, `${header.width ?? "?"}×${header.height ?? "?"} terminal, ${events.length} outputs`),
    h("div", { class: "actions" }, button, progress),
    screen);
}

function localInput(name, label) {
  return h("label", { for: `audit-${name}` }, label, h("input", { type: "datetime-local", name, id: `audit-${name}`, step: 60 }));
}

async function auditPage() {
  const page = h("div", { id: "audit-page" }, h("h1", {}, `Audit trail of org ${state.org}`));
  main().replaceChildren(page);
  if (!isAdmin()) {
    page.append(h("p", {}, "Only the org's admins read its audit trail."));
    return;
  }
  const text = (name, label, attrs = {}) => h("label", { for: `audit-${name}` }, label, h("input", { name, id: `audit-${name}`, ...attrs }));
  const form = h("form", { class: "panel filters", id: "audit-filters", "aria-label": "Filters" },
    text("user", "User"),
    text("cluster", "Cluster id", { inputmode: "numeric", pattern: "[0-9]*" }),
    text("verb", "Verb", { list: "audit-verbs" }),
    h("datalist", { id: "audit-verbs" }, ...["get", "list", "watch", "create", "update", "patch", "delete", "connect", "login"].map((v) => h("option", { value: v }))),
    h("label", { for: "audit-decision" }, "Decision",
      h("select", { name: "decision", id: "audit-decision" }, h("option", { value: "" }, "any"), ...["allow", "deny", "error"].map((d) => h("option", { value: d }, d)))),
    text("status", "Status", { inputmode: "numeric", pattern: "[0-9]*", size: 4 }),
    localInput("since", "Since (default: an hour ago)"),
    localInput("until", "Until (default: now)"),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "audit-apply" }, "Apply"), h("button", { type: "reset" }, "Clear")));
  const chart = h("div", { id: "audit-chart-box" });
  const error = h("p", { class: "error", role: "alert", id: "audit-error" });
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  const detail = h("div", { id: "audit-detail" });
  page.append(form, chart, error,
    h("table", { id: "audit-events" }, h("thead", {}, h("tr", {}, ...["Time", "User", "Verb", "Resource or path", "Cluster", "Status", "Decision"].map((c) => h("th", {}, c)))), body),
    pager, detail);

  let filters = new URLSearchParams();
  let cursors = [null];
  const showEvent = (event) => {
    const parts = [h("h2", {}, `Event ${event.request_id}`), h("pre", { id: "audit-record" }, JSON.stringify(event, null, 2))];
    if (event.recording?.id) {
      const play = h("button", { type: "button", id: "audit-play", onclick: async () => {
        try {
          const cast = await api("GET", `${API}/orgs/${state.org}/audit/sessions/${encodeURIComponent(event.recording.id)}`, undefined, { text: true });
          play.replaceWith(player(cast));
        } catch (e) {
          play.after(h("p", { class: "error" }, explain(e, "read this recording")));
        }
      } }, "Play the session recording");
      parts.splice(1, 0, play);
    }
    detail.replaceChildren(h("section", { class: "panel" }, ...parts));
    detail.scrollIntoView({ block: "nearest" });
  };
  const page_ = async (index) => {
    const query = new URLSearchParams(filters);
    query.set("limit", "50");
    if (cursors[index]) query.set("cursor", cursors[index]);
    let answer;
    try {
      answer = await api("GET", `${API}/orgs/${state.org}/audit?${query}`);
    } catch (e) {
      error.textContent = explain(e, "read this org's audit trail");
      body.replaceChildren();
      return;
    }
    cursors = cursors.slice(0, index + 1);
    if (answer.next) cursors.push(answer.next);
    body.replaceChildren(
      ...answer.events.map((e) => {
        const row = h("tr", { class: "event", tabindex: 0, "data-request": e.request_id },
          h("td", {}, time(e.time)),
          h("td", {}, e.user),
          h("td", {}, e.verb ?? ""),
          h("td", {}, h("code", {}, e.resource || e.path || "")),
          h("td", {}, e.cluster ?? ""),
          h("td", {}, e.status),
          h("td", {}, h("span", { class: e.decision === "allow" ? "ok" : "bad" }, e.decision), e.recording ? " ▶" : ""));
        row.addEventListener("click", () => showEvent(e));
        row.addEventListener("keydown", (k) => {
          if (k.key === "Enter" || k.key === " ") {
            k.preventDefault();
            showEvent(e);
          }
        });
        return row;
      }),
    );
    if (answer.events.length === 0) body.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No event matches.")));
    pager.replaceChildren(
      h("button", { type: "button", id: "audit-newer", disabled: index === 0, onclick: () => page_(index - 1) }, "← Newer"),
      h("span", { class: "muted" }, `page ${index + 1}`),
      h("button", { type: "button", id: "audit-older", disabled: !answer.next, onclick: () => page_(index + 1) }, "Older →"));
  };
  const apply = async () => {
    const data = new FormData(form);
    filters = new URLSearchParams();
    for (const [key, value] of data) {
      if (!value) continue;
      if (key === "since" || key === "until") {
        const at = new Date(value);
        if (!Number.isNaN(at.getTime())) filters.set(key, at.toISOString());
      } else {
        filters.set(key, value);
      }
    }
    error.textContent = "";
    detail.replaceChildren();
    cursors = [null];
    const histogram = api("GET", `${API}/orgs/${state.org}/audit/histogram?${filters}`).then(
      (answer) => chart.replaceChildren(drawChart(answer)),
      (e) => chart.replaceChildren(h("p", { class: "error", id: "audit-chart-error" }, explain(e, "count this org's audit trail"))),
    );
    await Promise.all([histogram, page_(0)]);
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    apply();
  });
  form.addEventListener("reset", () => setTimeout(apply));
  await apply();
}

// ---------------------------------------------------------------------------------------
// Policy

async function policyPage() {
  const page = h("div", { id: "policy-page" }, h("h1", {}, "Policy"));
  main().replaceChildren(page);
  const error = h("p", { class: "error", role: "alert", id: "policy-error" });
  let policy;
  try {
    policy = await api("GET", `${API}/admin/policy`);
  } catch (e) {
    page.append(h("p", { class: "error" }, explain(e, "read the policy (global administrators)")));
    return;
  }
  const stats = (s) => `${s.policies} policy lines, ${s.groupings} groupings; roles: ${s.roles.join(", ")}; ${s.reloads} reloads`;
  const inForce = h("p", { id: "policy-stats" }, stats(policy.inForce));
  page.append(
    h("p", {}, "Kept in ", h("code", {}, policy.source), "."),
    inForce,
    h("p", { class: "muted", hidden: !policy.fixed }, policy.fixed ?? ""),
    h("div", { class: "actions" }, h("button", { type: "button", class: "primary", id: "policy-reload", onclick: async () => {
      try {
        const now = await api("POST", `${API}/admin/policy/reload`);
        inForce.textContent = stats(now);
        error.textContent = "";
      } catch (e) {
        error.textContent = explain(e, "reload the policy");
      }
    } }, "Reload the policy")),
    error,
    h("pre", { id: "policy-text" }, policy.policy));
}

// ---------------------------------------------------------------------------------------
// The frame: who is logged in, the org, the pages

const PAGES = { clusters: clustersPage, members: membersPage, tokens: tokensPage, audit: auditPage, policy: policyPage };

async function show() {
  notice("");
  const name = location.hash.slice(1) || "clusters";
  const render = PAGES[name] || clustersPage;
  for (const link of document.querySelectorAll("nav a[data-page]")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!state.org && name !== "tokens" && name !== "policy") {
    main().replaceChildren(h("h1", {}, "No org"), h("p", {}, "You are not a member of any org yet: an org's admin adds you. You can still make tokens."));
    return;
  }
  try {
    await render();
  } catch (e) {
    notice(explain(e, "open this page"));
  }
}

function selectOrg(id) {
  const org = state.orgs.find((o) => String(o.id) === String(id)) || state.orgs[0];
  state.org = org ? org.id : null;
  state.role = org ? org.role : null;
  if (org) localStorage.setItem("kubegate.org", String(org.id));
  for (const link of document.querySelectorAll("nav a[data-admin]")) link.hidden = !isAdmin();
}

async function start() {
  try {
    state.session = await api("GET", "/auth/session");
    document.getElementById("user").textContent = state.session.user;
    state.orgs = await api("GET", `${API}/orgs`);
  } catch (e) {
    main().replaceChildren(h("p", { class: "error" }, explain(e, "use the console")));
    return;
  }
  const select = document.getElementById("org");
  select.replaceChildren(...state.orgs.map((o) => h("option", { value: o.id }, `${o.id} (${o.role})`)));
  selectOrg(localStorage.getItem("kubegate.org"));
  if (state.org !== null) select.value = String(state.org);
  select.addEventListener("change", () => {
    selectOrg(select.value);
    show();
  });
  // the policy page is for global administrators: offered when the API lets them read it
  fetch(`${API}/admin/policy`, { credentials: "same-origin", headers: { Accept: "application/json" } }).then((res) => {
    document.querySelector("nav a[data-global]").hidden = !res.ok;
  }, () => {});
  const back = sessionStorage.getItem("kubegate.back");
  if (back) {
    sessionStorage.removeItem("kubegate.back");
    if (!location.hash) location.hash = back;
  }
  window.addEventListener("hashchange", show);
  await show();
  document.body.dataset.ready = "true";
}

start();
