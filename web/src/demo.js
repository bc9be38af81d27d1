// What only the demo page needs: the demo session that `serve --dev` hands out
// (`GET /api/dev/demo`), a test notification and workspace memberships, both
// sent with the API key (a real app sends these from its backend, never from a
// browser), and per-user colors.

/** `{ apiKey, workspaces: [..], users: [{ id, name, token }] }` */
export async function loadDemo() {
  const res = await fetch("/api/dev/demo", { headers: { Accept: "application/json" } });
  if (!res.ok) {
    throw new Error(
      res.status === 404
        ? "This server has no demo session: start it with `switchboard serve --dev`."
        : `GET /api/dev/demo answered ${res.status}`,
    );
  }
  return res.json();
}

/** `POST /api/notifications` with the API key; resolves with `{ id, createdAt }`. */
export async function sendNotification(apiKey, { userId, type, data }) {
  const res = await fetch("/api/notifications", {
    method: "POST",
    headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
    body: JSON.stringify({ userId, type, data }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(`${body.error ?? res.status}: ${body.message ?? "the notification was refused"}`);
  return body;
}

/**
 * The workspace that no demo token grants: only its members get in, and the
 * page's "Members of #team" section adds and removes them as an app's backend
 * would. Removing someone takes them out of it live (`workspace_removed`).
 */
export const TEAM = "team";

/** `PUT` (add, as `member`) or `DELETE` (remove) `/api/workspaces/{id}/members/{userId}` with the API key. */
export async function setMembership(apiKey, workspaceId, userId, member) {
  const res = await fetch(`/api/workspaces/${encodeURIComponent(workspaceId)}/members/${encodeURIComponent(userId)}`, {
    method: member ? "PUT" : "DELETE",
    headers: { Authorization: `Bearer ${apiKey}` },
  });
  if (!res.ok) throw new Error(`the server answered ${res.status}`);
}

/**
 * Whether a user (by token) may use a workspace: `GET /api/workspaces/{id}/presence`
 * answers 200 or 403. Only the demo can ask this about someone else: it holds everyone's token.
 */
export async function hasAccess(token, workspaceId) {
  const res = await fetch(`/api/workspaces/${encodeURIComponent(workspaceId)}/presence`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  if (res.status === 403) return false;
  if (!res.ok) throw new Error(`the server answered ${res.status}`);
  return true;
}

/** The page's address for a user and workspace: `?user=alice&workspace=demo`. */
export function hrefFor({ user, workspace }) {
  const params = new URLSearchParams();
  if (user) params.set("user", user);
  if (workspace) params.set("workspace", workspace);
  const query = params.toString();
  return query ? `?${query}` : window.location.pathname;
}

const PALETTE = [
  { hex: "#e11d48", rgb: { r: 225, g: 29, b: 72 } },
  { hex: "#2563eb", rgb: { r: 37, g: 99, b: 235 } },
  { hex: "#059669", rgb: { r: 5, g: 150, b: 105 } },
  { hex: "#d97706", rgb: { r: 217, g: 119, b: 6 } },
  { hex: "#7c3aed", rgb: { r: 124, g: 58, b: 237 } },
  { hex: "#0891b2", rgb: { r: 8, g: 145, b: 178 } },
];
const FIXED = { alice: 0, bob: 1, carol: 2 };

/** A stable color for a user id: `{ hex, rgb }`. */
export function colorOf(userId = "") {
  let index = FIXED[userId];
  if (index === undefined) {
    let hash = 0;
    for (const ch of userId) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
    index = hash % PALETTE.length;
  }
  return PALETTE[index];
}
