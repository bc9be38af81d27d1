// A signed-in demo user in one workspace: the hooks of realtime.js feed the
// header (bell), the sidebar (workspaces, online list), the chat and the editor.

import { useMemo } from "react";
import { useChat, useNotifications, usePresence, useSocket, useTyping } from "../realtime.js";
import Chat from "./Chat.jsx";
import Editor from "./Editor.jsx";
import Header from "./Header.jsx";
import Sidebar from "./Sidebar.jsx";

export default function Session({ demo, me, workspace, onWorkspace, onSignOut }) {
  const { socket, status, error: socketError } = useSocket(me.token);
  const chat = useChat(socket, workspace);
  const online = usePresence(socket, workspace, chat.joined);
  const typing = useTyping(socket, workspace, me.id);
  const inbox = useNotifications(me.token);
  const names = useMemo(() => Object.fromEntries(demo.users.map((u) => [u.id, u.name])), [demo.users]);

  return (
    <div className="app">
      <Header me={me} socketStatus={status} inbox={inbox} names={names} onSignOut={onSignOut} />
      {socketError && status !== "connected" && (
        <div className="banner" role="alert">
          Chat connection: {socketError}.{" "}
          {/auth/i.test(socketError) ? "Was the server restarted? Reload the page for new tokens." : "Retrying…"}
        </div>
      )}
      <main className="layout">
        <Sidebar
          me={me}
          users={demo.users}
          apiKey={demo.apiKey}
          workspaces={demo.workspaces}
          workspace={workspace}
          onWorkspace={onWorkspace}
          online={online}
          names={names}
        />
        <Chat me={me} workspace={workspace} chat={chat} typing={typing} names={names} connected={status === "connected"} />
        <Editor key={workspace} me={me} workspace={workspace} />
      </main>
    </div>
  );
}
