// A signed-in demo user in one workspace: the hooks of realtime.js feed the
// header (bell), the sidebar (workspaces, online list, members of #team), the
// chat and the editor.
//
// The token grants the demo workspaces; #team is open to its members only, so
// it is listed while the user is one: the page joins it on connect (ok, or
// `forbidden`), again when a notification says the user was added, and drops it
// live when the server sends `workspace_removed`.

import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { TEAM } from "../demo.js";
import { useChat, useMemberships, useNotifications, usePresence, useSocket, useTyping } from "../realtime.js";
import Chat from "./Chat.jsx";
import Editor from "./Editor.jsx";
import Header from "./Header.jsx";
import RemovedNotice from "./RemovedNotice.jsx";
import Sidebar from "./Sidebar.jsx";

const MEMBER_WORKSPACES = [TEAM];

export default function Session({ demo, me, workspace: requested, onWorkspace, onSignOut }) {
  const { socket, status, error: socketError } = useSocket(me.token);
  const inbox = useNotifications(me.token);
  const names = useMemo(() => Object.fromEntries(demo.users.map((u) => [u.id, u.name])), [demo.users]);

  // Removals this page asked for itself ("Remove" on the user's own row): "You left", not "You were removed".
  const leaving = useRef(new Set());
  const [removed, setRemoved] = useState(null); // { workspace, left }
  const onRemoved = useCallback((w) => {
    const left = leaving.current.delete(w);
    setRemoved({ workspace: w, left });
  }, []);
  const { access, recheck } = useMemberships(socket, MEMBER_WORKSPACES, { onRemoved });

  // The backend's "you were added to #team" notification: check again, and #team shows up.
  const seen = useRef(new Set());
  useEffect(() => {
    let added = false;
    for (const n of inbox.notifications) {
      if (seen.current.has(n.id)) continue;
      seen.current.add(n.id);
      if (n.type === "workspace_added" && MEMBER_WORKSPACES.includes(n.data?.workspaceId)) added = true;
    }
    if (added) recheck();
  }, [inbox.notifications, recheck]);

  // Added again after a removal: the notice has done its job.
  useEffect(() => {
    if (removed && access[removed.workspace] === "member") setRemoved(null);
  }, [removed, access]);

  const workspaces = [...demo.workspaces, ...MEMBER_WORKSPACES.filter((w) => access[w] === "member")];
  // A membership workspace stays selected while its access is being checked; without access, the first one.
  const pending = MEMBER_WORKSPACES.includes(requested) && access[requested] !== "none";
  const workspace = demo.workspaces.includes(requested) || pending ? requested : demo.workspaces[0];
  const ready = demo.workspaces.includes(workspace) || access[workspace] === "member";
  const active = ready ? workspace : null;

  useEffect(() => {
    if (workspace !== requested) onWorkspace(workspace, { replace: true });
  }, [workspace, requested, onWorkspace]);

  const chat = useChat(socket, active, { stayJoined: MEMBER_WORKSPACES.includes(active) });
  const online = usePresence(socket, active, chat.joined);
  const typing = useTyping(socket, active, me.id);

  // The team section says when it removes the user themself (and again if that failed).
  const onLeave = useCallback((w, yes = true) => {
    if (yes) leaving.current.add(w);
    else leaving.current.delete(w);
  }, []);

  return (
    <div className="app">
      <Header me={me} socketStatus={status} inbox={inbox} names={names} onSignOut={onSignOut} />
      {socketError && status !== "connected" && (
        <div className="banner" role="alert">
          Chat connection: {socketError}.{" "}
          {/auth/i.test(socketError) ? "Was the server restarted? Reload the page for new tokens." : "Retrying…"}
        </div>
      )}
      {removed && (
        <RemovedNotice
          workspace={removed.workspace}
          left={removed.left}
          onDismiss={() => setRemoved(null)}
        />
      )}
      <main className="layout">
        <Sidebar
          me={me}
          users={demo.users}
          apiKey={demo.apiKey}
          workspaces={workspaces}
          workspace={workspace}
          onWorkspace={onWorkspace}
          online={online}
          names={names}
          team={TEAM}
          teamAccess={access[TEAM]}
          onTeamChanged={recheck}
          onLeave={onLeave}
        />
        <Chat me={me} workspace={workspace} chat={chat} typing={typing} names={names} connected={status === "connected"} />
        <Editor key={workspace} me={me} workspace={workspace} ready={ready} />
      </main>
    </div>
  );
}
