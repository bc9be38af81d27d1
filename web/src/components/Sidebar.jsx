import { hrefFor } from "../demo.js";
import Avatar from "./Avatar.jsx";
import TeamMembers from "./TeamMembers.jsx";
import TestNotification from "./TestNotification.jsx";

/** Workspaces, who is online, the members of #team, a test notification, and links to open the page as someone else. */
export default function Sidebar({
  me,
  users,
  apiKey,
  workspaces,
  workspace,
  onWorkspace,
  online,
  names,
  team,
  teamAccess,
  onTeamChanged,
  onLeave,
}) {
  const people = [...online].sort((a, b) =>
    a.userId === me.id ? -1 : b.userId === me.id ? 1 : a.userId.localeCompare(b.userId),
  );
  return (
    <aside className="sidebar">
      <section className="side-workspaces">
        <h3>Workspaces</h3>
        <ul className="workspace-list" data-testid="workspaces">
          {workspaces.map((w) => (
            <li key={w} data-workspace={w}>
              <button
                type="button"
                className={w === workspace ? "active" : ""}
                aria-current={w === workspace ? "page" : undefined}
                onClick={() => onWorkspace(w)}
              >
                <span className="hash">#</span>
                {w}
              </button>
            </li>
          ))}
        </ul>
      </section>

      <section className="side-online">
        <h3>
          Online <span className="count">{people.length}</span>
        </h3>
        <ul className="online-list" data-testid="online">
          {people.map((u) => (
            <li key={u.userId} data-user={u.userId}>
              <span className="presence">
                <Avatar userId={u.userId} name={u.name ?? names[u.userId]} size="sm" />
                <span className="presence-dot" aria-hidden="true" />
              </span>
              <span className="online-name">{u.name ?? names[u.userId] ?? u.userId}</span>
              {u.userId === me.id && <span className="you">you</span>}
            </li>
          ))}
          {people.length === 0 && <li className="muted">Connecting…</li>}
        </ul>
      </section>

      <TeamMembers
        me={me}
        users={users}
        apiKey={apiKey}
        team={team}
        myAccess={teamAccess}
        onChanged={onTeamChanged}
        onLeave={onLeave}
      />

      <TestNotification me={me} users={users} apiKey={apiKey} />

      <section className="side-try">
        <h3>Try it with two people</h3>
        <p className="muted small">Open this workspace in a new window as:</p>
        <div className="open-as">
          {users
            .filter((u) => u.id !== me.id)
            .map((u) => (
              <a key={u.id} href={hrefFor({ user: u.id, workspace })} target="_blank" rel="noreferrer">
                <Avatar userId={u.id} name={u.name} size="sm" />
                {u.name} ↗
              </a>
            ))}
        </div>
      </section>
    </aside>
  );
}
