// React hooks for every real-time feature of a Switchboard server, in one file
// that an app can copy. The only dependencies are react, socket.io-client, yjs
// and y-websocket; nothing here knows about the demo page.
//
//   const { socket, status } = useSocket(token);                  // one per signed-in user
//   const chat = useChat(socket, workspaceId);                   // joins W, history + live messages, send()
//   const online = usePresence(socket, workspaceId, chat.joined); // who is online in W
//   const typing = useTyping(socket, workspaceId, myUserId);      // who is typing, notifyTyping()
//   const inbox = useNotifications(token);                       // EventSource + list + unread count
//   const { access, recheck } = useMemberships(socket, ["team"], { onRemoved }); // access that comes and goes
//   const doc = useDocument({ workspaceId, docName, token, user }); // Y.Doc over y-websocket, awareness peers
//
// The server (URL) is the page's own origin unless `url` is given. The wire
// contract is Switchboard's DESIGN.md: sections 3 (Socket.IO), 4 (HTTP API,
// notifications) and 5 (y-websocket).

import { useCallback, useEffect, useRef, useState } from "react";
import { io } from "socket.io-client";
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";

/** How long an acknowledged emit or an HTTP call may take before it counts as failed. */
const ACK_TIMEOUT_MS = 10_000;

/** Adds the items of `incoming` that `list` lacks (by `id`), sorted by id (descending when `newestFirst`). */
function mergeById(list, incoming, { newestFirst = false, update } = {}) {
  const byId = new Map(list.map((item) => [item.id, item]));
  let changed = false;
  for (const item of incoming) {
    if (item == null || typeof item.id !== "number") continue;
    const old = byId.get(item.id);
    const next = old === undefined ? item : update ? update(old, item) : old;
    if (next !== old) {
      byId.set(item.id, next);
      changed = true;
    }
  }
  if (!changed) return list;
  const sorted = [...byId.values()].sort((a, b) => a.id - b.id);
  return newestFirst ? sorted.reverse() : sorted;
}

/** `{ code, message }` from a failed ack `{ ok: false, error, message }`, an `error` event or an exception. */
function toError(failure, fallback = "internal") {
  if (failure instanceof Error) {
    const timedOut = /timed? ?out/i.test(failure.message);
    return { code: timedOut ? "timeout" : fallback, message: timedOut ? "The server did not answer in time" : failure.message };
  }
  return { code: failure?.error ?? failure?.code ?? fallback, message: failure?.message ?? "Something went wrong" };
}

/** An acknowledged emit; resolves with the ack, or with `{ ok: false, error, message }` on a timeout. */
async function request(socket, event, payload) {
  try {
    return await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, payload);
  } catch (err) {
    const { code, message } = toError(err);
    return { ok: false, error: code, message };
  }
}

// ---------------------------------------------------------------------------
// Socket.IO

/**
 * One Socket.IO connection for `token` (DESIGN.md section 3). It reconnects by
 * itself (and Switchboard's connection-state recovery replays what it missed).
 * Returns `{ socket, status, error }`: status is `connecting`, `connected` or
 * `disconnected`; error is the last `connect_error` message (e.g. "Authentication failed").
 */
export function useSocket(token, { url } = {}) {
  const [state, setState] = useState({ socket: null, status: "connecting", error: null });
  useEffect(() => {
    if (!token) return undefined;
    const socket = url ? io(url, { auth: { token } }) : io({ auth: { token } });
    const set = (status, error = null) => setState({ socket, status, error });
    set("connecting");
    socket.on("connect", () => set("connected"));
    socket.on("disconnect", () => set("disconnected"));
    socket.on("connect_error", (err) => set("disconnected", err?.message ?? "Connection failed"));
    return () => {
      socket.removeAllListeners();
      socket.close();
    };
  }, [token, url]);
  return state;
}

/**
 * Chat in one workspace. Joins it on every (re)connect; the first join loads the
 * latest `limit` messages with `history`, later joins pass `since` so the server
 * replays what was missed. Messages are de-duplicated by id and kept oldest first.
 *
 * With `stayJoined`, switching away does not leave the workspace (for one that
 * `useMemberships` keeps joined). When the server takes the socket out of it
 * (`workspace_removed`), `joined` turns false.
 *
 * Returns `{ messages, joined, error, send(content), loadOlder(), hasOlder, clearError() }`.
 * `send` resolves with the ack: `{ ok: true, id, createdAt }` or `{ ok: false, error, message }`
 * (e.g. `too_large`); failures, and `error` events from the server, also land in `error`.
 */
export function useChat(socket, workspaceId, { limit = 50, stayJoined = false } = {}) {
  const [messages, setMessages] = useState([]);
  const [joined, setJoined] = useState(false);
  const [error, setError] = useState(null);
  const [hasOlder, setHasOlder] = useState(false);
  const lastId = useRef(0);
  const firstId = useRef(0);
  const current = useRef(null); // the workspace the state belongs to

  useEffect(() => {
    current.current = workspaceId;
    setMessages([]);
    setJoined(false);
    setError(null);
    setHasOlder(false);
    lastId.current = 0;
    firstId.current = 0;
    if (!socket || !workspaceId) return undefined;
    let active = true;

    const add = (list) => {
      for (const m of list) {
        if (typeof m?.id !== "number") continue;
        if (m.id > lastId.current) lastId.current = m.id;
        if (!firstId.current || m.id < firstId.current) firstId.current = m.id;
      }
      setMessages((prev) => mergeById(prev, list));
    };
    const onMessage = (message) => {
      if (message?.workspaceId === workspaceId) add([message]);
    };
    const onError = (failure) => setError(toError(failure));
    const onDisconnect = () => setJoined(false);
    const onRemoved = ({ workspaceId: w } = {}) => {
      if (w === workspaceId) setJoined(false);
    };
    const join = async () => {
      const since = lastId.current;
      const ack = await request(socket, "join_workspace", since ? { workspaceId, since } : { workspaceId });
      if (!active) return;
      if (!ack?.ok) {
        setError(toError(ack));
        return;
      }
      setJoined(true);
      if (since) return; // the missed messages were replayed as `message` events
      const page = await request(socket, "history", { workspaceId, limit });
      if (!active) return;
      if (page?.ok) {
        add(page.messages);
        setHasOlder(page.messages.length >= limit);
      } else {
        setError(toError(page));
      }
    };

    socket.on("message", onMessage);
    socket.on("error", onError);
    socket.on("connect", join);
    socket.on("disconnect", onDisconnect);
    socket.on("workspace_removed", onRemoved);
    if (socket.connected) join();
    return () => {
      active = false;
      socket.off("message", onMessage);
      socket.off("error", onError);
      socket.off("connect", join);
      socket.off("disconnect", onDisconnect);
      socket.off("workspace_removed", onRemoved);
      if (socket.connected && !stayJoined) socket.emit("leave_workspace", { workspaceId });
    };
  }, [socket, workspaceId, limit, stayJoined]);

  const send = useCallback(
    async (content) => {
      if (!socket) return { ok: false, error: "unavailable", message: "Not connected" };
      const clientMsgId = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
      const ack = await request(socket, "message", { workspaceId, content, clientMsgId });
      if (ack?.ok) setError(null);
      else setError(toError(ack));
      return ack;
    },
    [socket, workspaceId],
  );

  const loadOlder = useCallback(async () => {
    const before = firstId.current;
    if (!socket || !before) return;
    const page = await request(socket, "history", { workspaceId, before, limit });
    if (current.current !== workspaceId) return; // switched meanwhile
    if (page?.ok) {
      for (const m of page.messages) if (m.id < firstId.current) firstId.current = m.id;
      setMessages((prev) => mergeById(prev, page.messages));
      setHasOlder(page.messages.length >= limit);
    } else {
      setError(toError(page));
    }
  }, [socket, workspaceId, limit]);

  const clearError = useCallback(() => setError(null), []);
  return { messages, joined, error, send, loadOlder, hasOlder, clearError };
}

/**
 * Who is online in a workspace: `[{ userId, name? }]`, the signed-in user included.
 * Loaded with the `presence` event whenever `joined` turns true (so after every
 * reconnect), then kept up to date by `presence_join` / `presence_leave`.
 */
export function usePresence(socket, workspaceId, joined) {
  const [users, setUsers] = useState([]);
  useEffect(() => {
    setUsers([]);
    if (!socket || !workspaceId) return undefined;
    let active = true;
    const onJoin = ({ workspaceId: w, userId } = {}) => {
      if (w !== workspaceId) return;
      setUsers((prev) => (prev.some((u) => u.userId === userId) ? prev : [...prev, { userId }]));
    };
    const onLeave = ({ workspaceId: w, userId } = {}) => {
      if (w === workspaceId) setUsers((prev) => prev.filter((u) => u.userId !== userId));
    };
    socket.on("presence_join", onJoin);
    socket.on("presence_leave", onLeave);
    if (joined) {
      request(socket, "presence", { workspaceId }).then((ack) => {
        if (active && ack?.ok) setUsers(ack.users);
      });
    }
    return () => {
      active = false;
      socket.off("presence_join", onJoin);
      socket.off("presence_leave", onLeave);
    };
  }, [socket, workspaceId, joined]);
  return users;
}

/**
 * Typing indicators. `typingUserIds` lists the other users typing in the workspace.
 * Call `notifyTyping()` on every keystroke: it sends `typing_start` at most every
 * 2 s (the server ends typing after 6 s without a refresh) and `typing_stop`
 * after 3 s without keystrokes; call `stopTyping()` when the message is sent.
 */
export function useTyping(socket, workspaceId, selfUserId) {
  const [typingUserIds, setTyping] = useState([]);
  const lastStart = useRef(0);
  const idleTimer = useRef(null);

  useEffect(() => {
    setTyping([]);
    if (!socket || !workspaceId) return undefined;
    const expiry = new Map(); // userId -> timer: a safety net should a stop never arrive
    const remove = (userId) => {
      clearTimeout(expiry.get(userId));
      expiry.delete(userId);
      setTyping((prev) => (prev.includes(userId) ? prev.filter((id) => id !== userId) : prev));
    };
    const onTyping = ({ workspaceId: w, userId } = {}) => {
      if (w !== workspaceId || userId === selfUserId) return;
      clearTimeout(expiry.get(userId));
      expiry.set(userId, setTimeout(() => remove(userId), 8_000));
      setTyping((prev) => (prev.includes(userId) ? prev : [...prev, userId]));
    };
    const onStopped = ({ workspaceId: w, userId } = {}) => {
      if (w === workspaceId) remove(userId);
    };
    const onDisconnect = () => {
      for (const userId of [...expiry.keys()]) remove(userId);
      lastStart.current = 0;
    };
    socket.on("user_typing", onTyping);
    socket.on("user_stopped_typing", onStopped);
    socket.on("presence_leave", onStopped);
    socket.on("disconnect", onDisconnect);
    return () => {
      for (const timer of expiry.values()) clearTimeout(timer);
      clearTimeout(idleTimer.current);
      if (lastStart.current && socket.connected) socket.emit("typing_stop", { workspaceId });
      lastStart.current = 0;
      socket.off("user_typing", onTyping);
      socket.off("user_stopped_typing", onStopped);
      socket.off("presence_leave", onStopped);
      socket.off("disconnect", onDisconnect);
    };
  }, [socket, workspaceId, selfUserId]);

  const stopTyping = useCallback(() => {
    clearTimeout(idleTimer.current);
    if (lastStart.current && socket?.connected) socket.emit("typing_stop", { workspaceId });
    lastStart.current = 0;
  }, [socket, workspaceId]);

  const notifyTyping = useCallback(() => {
    if (!socket?.connected) return;
    const now = Date.now();
    if (now - lastStart.current > 2_000) {
      socket.emit("typing_start", { workspaceId });
      lastStart.current = now;
    }
    clearTimeout(idleTimer.current);
    idleTimer.current = setTimeout(stopTyping, 3_000);
  }, [socket, workspaceId, stopTyping]);

  return { typingUserIds, notifyTyping, stopTyping };
}

/**
 * Workspaces whose access comes and goes while connected: memberships that the
 * app's backend adds and removes (`PUT`/`DELETE /api/workspaces/{id}/members/{userId}`).
 * On every (re)connect, and on `recheck()`, it joins each one (the ack says
 * whether the user may: ok, or `forbidden`) and stays in it, so that
 * `workspace_removed` arrives even while the page shows another workspace.
 *
 * Returns `{ access, recheck() }`: `access` maps each workspace to `checking`,
 * `member` or `none`. `onRemoved(workspaceId)` runs when the server takes the
 * socket out of one (the membership was deleted). Call `recheck()` when the
 * user may have been added (e.g. on a notification from the backend saying so).
 */
export function useMemberships(socket, workspaceIds, { onRemoved } = {}) {
  const key = workspaceIds.join("\n");
  const [access, setAccess] = useState({});
  const recheckRef = useRef(() => {});
  const onRemovedRef = useRef(onRemoved);
  useEffect(() => {
    onRemovedRef.current = onRemoved;
  });

  useEffect(() => {
    const ids = key ? key.split("\n") : [];
    setAccess(Object.fromEntries(ids.map((w) => [w, "checking"])));
    if (!socket || ids.length === 0) return undefined;
    let active = true;
    const joined = new Set();
    const set = (workspaceId, value) =>
      setAccess((prev) => (prev[workspaceId] === value ? prev : { ...prev, [workspaceId]: value }));
    // `all`: re-join even those already joined (after a reconnect the rooms may be gone).
    const check = (all) =>
      Promise.all(
        ids.map(async (workspaceId) => {
          if (!all && joined.has(workspaceId)) return;
          const ack = await request(socket, "join_workspace", { workspaceId });
          if (!active) return;
          if (ack?.ok) {
            joined.add(workspaceId);
            set(workspaceId, "member");
          } else if (ack?.error === "forbidden") {
            joined.delete(workspaceId);
            set(workspaceId, "none");
          }
          // Any other failure (a timeout): the last known state stands until the next check.
        }),
      );
    const onConnect = () => check(true);
    const onWorkspaceRemoved = ({ workspaceId } = {}) => {
      if (!ids.includes(workspaceId)) return;
      joined.delete(workspaceId);
      set(workspaceId, "none");
      onRemovedRef.current?.(workspaceId);
    };
    recheckRef.current = () => {
      if (socket.connected) check(false);
    };
    socket.on("connect", onConnect);
    socket.on("workspace_removed", onWorkspaceRemoved);
    if (socket.connected) check(true);
    return () => {
      active = false;
      recheckRef.current = () => {};
      socket.off("connect", onConnect);
      socket.off("workspace_removed", onWorkspaceRemoved);
      if (socket.connected) for (const workspaceId of joined) socket.emit("leave_workspace", { workspaceId });
    };
  }, [socket, key]);

  const recheck = useCallback(() => recheckRef.current(), []);
  return { access, recheck };
}

// ---------------------------------------------------------------------------
// Notifications (SSE)

/**
 * The signed-in user's notifications (DESIGN.md section 4): the recent and the
 * unread ones from `GET /api/notifications`, then live ones from an EventSource
 * that resumes after the newest one loaded (so nothing falls between the two).
 *
 * Returns `{ notifications (newest first), unreadCount, status, error, markRead(id), markAllRead() }`;
 * status is `connecting`, `live` or `reconnecting`.
 */
export function useNotifications(token, { url = "", limit = 50 } = {}) {
  const [notifications, setNotifications] = useState([]);
  const [status, setStatus] = useState("connecting");
  const [error, setError] = useState(null);

  useEffect(() => {
    setNotifications([]);
    setStatus("connecting");
    setError(null);
    if (!token) return undefined;
    let source = null;
    let active = true;
    // Read wins: a copy replayed by the stream must not undo a local "mark read".
    const update = (old, incoming) => (incoming.read && !old.read ? { ...old, read: true } : old);
    const add = (list) => setNotifications((prev) => mergeById(prev, list, { newestFirst: true, update }));

    (async () => {
      let newest = 0;
      try {
        const headers = { Authorization: `Bearer ${token}` };
        const [recent, unread] = await Promise.all(
          [`limit=${limit}`, `unread=true&limit=${limit}`].map(async (query) => {
            const res = await fetch(`${url}/api/notifications?${query}`, { headers });
            if (!res.ok) throw new Error(`GET /api/notifications answered ${res.status}`);
            return (await res.json()).notifications ?? [];
          }),
        );
        if (!active) return;
        add([...recent, ...unread]);
        for (const n of [...recent, ...unread]) newest = Math.max(newest, n.id);
      } catch (err) {
        if (active) setError(err.message);
      }
      if (!active) return;
      let stream = `${url}/api/notifications/stream?token=${encodeURIComponent(token)}`;
      if (newest) stream += `&lastEventId=${newest}`;
      source = new EventSource(stream);
      source.onmessage = (event) => {
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return;
        }
        if (data?.id == null) {
          if (data?.type === "connected") setStatus("live");
          return;
        }
        add([data]);
      };
      source.onerror = () => setStatus(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
    })();

    return () => {
      active = false;
      source?.close();
    };
  }, [token, url, limit]);

  const post = useCallback(
    async (path) => {
      const res = await fetch(`${url}${path}`, { method: "POST", headers: { Authorization: `Bearer ${token}` } });
      if (!res.ok && res.status !== 404) setError(`POST ${path} answered ${res.status}`);
    },
    [token, url],
  );
  const markRead = useCallback(
    (id) => {
      setNotifications((prev) => prev.map((n) => (n.id === id && !n.read ? { ...n, read: true } : n)));
      return post(`/api/notifications/${id}/read`);
    },
    [post],
  );
  const markAllRead = useCallback(() => {
    setNotifications((prev) => prev.map((n) => (n.read ? n : { ...n, read: true })));
    return post("/api/notifications/read-all");
  }, [post]);

  const unreadCount = notifications.reduce((count, n) => count + (n.read ? 0 : 1), 0);
  return { notifications, unreadCount, status, error, markRead, markAllRead };
}

// ---------------------------------------------------------------------------
// Collaborative documents (Yjs over y-websocket)

/**
 * A shared Y.Doc: `docName` in workspace `workspaceId`, synced through
 * `/collab/{workspaceId}/{docName}` (DESIGN.md section 5). `user` (`{ id, name, color }`)
 * is published in awareness as the `user` field.
 *
 * Returns `{ doc, provider, status, synced, peers }` (doc and provider are null
 * until created); `peers` are the other editors' awareness `user` fields, one per user.
 */
export function useDocument({ workspaceId, docName, token, user, url }) {
  const [state, setState] = useState({ doc: null, provider: null });
  const [status, setStatus] = useState("connecting");
  const [synced, setSynced] = useState(false);
  const [peers, setPeers] = useState([]);
  const userKey = JSON.stringify(user ?? null);

  useEffect(() => {
    if (!workspaceId || !docName || !token) return undefined;
    const base =
      url ?? `${window.location.protocol === "https:" ? "wss" : "ws"}://${window.location.host}`;
    const doc = new Y.Doc();
    const provider = new WebsocketProvider(`${base}/collab/${encodeURIComponent(workspaceId)}`, docName, doc, {
      params: { token },
    });
    const { awareness } = provider;
    awareness.setLocalStateField("user", JSON.parse(userKey));

    const onStatus = ({ status: s }) => setStatus(s);
    const onSync = (isSynced) => setSynced(isSynced);
    const onAwareness = () => {
      const seen = new Map();
      for (const [clientId, s] of awareness.getStates()) {
        if (clientId === doc.clientID || !s?.user) continue;
        const key = s.user.id ?? s.user.name ?? clientId;
        if (!seen.has(key)) seen.set(key, s.user);
      }
      setPeers([...seen.values()]);
    };
    provider.on("status", onStatus);
    provider.on("sync", onSync);
    awareness.on("change", onAwareness);
    setState({ doc, provider });
    setStatus(provider.wsconnected ? "connected" : "connecting");
    setSynced(provider.synced);
    onAwareness();

    return () => {
      awareness.off("change", onAwareness);
      provider.off("status", onStatus);
      provider.off("sync", onSync);
      provider.destroy();
      doc.destroy();
      setState({ doc: null, provider: null });
      setSynced(false);
      setPeers([]);
    };
  }, [workspaceId, docName, token, url, userKey]);

  return { ...state, status, synced, peers };
}
