import { useCallback, useEffect, useState } from "react";
import { hasAccess, sendNotification, setMembership } from "../demo.js";
import Avatar from "./Avatar.jsx";

/**
 * Who may use #team, a workspace no token grants: add or remove a demo user as
 * a member, as an app's backend would (with the API key). Someone added gets a
 * notification, and #team appears in their list; someone removed is taken out
 * of it at once, on every page they have open.
 */
export default function TeamMembers({ me, users, apiKey, team, myAccess, onChanged, onLeave }) {
  const [members, setMembers] = useState({}); // userId -> true | false
  const [busy, setBusy] = useState(null);
  const [problem, setProblem] = useState(null);

  const refresh = useCallback(async () => {
    const entries = await Promise.all(
      users.map(async (u) => [u.id, await hasAccess(u.token, team).catch(() => undefined)]),
    );
    setMembers((prev) => {
      const next = { ...prev };
      for (const [id, member] of entries) if (member !== undefined) next[id] = member;
      return next;
    });
  }, [users, team]);

  // On open, whenever the user's own access changes, and when the window is back in front
  // (someone may have changed the members from another window).
  useEffect(() => {
    refresh();
  }, [refresh, myAccess]);
  useEffect(() => {
    window.addEventListener("focus", refresh);
    return () => window.removeEventListener("focus", refresh);
  }, [refresh]);

  const toggle = async (user) => {
    const add = !members[user.id];
    const self = user.id === me.id;
    setBusy(user.id);
    setProblem(null);
    if (self && !add) onLeave(team);
    try {
      await setMembership(apiKey, team, user.id, add);
      setMembers((prev) => ({ ...prev, [user.id]: add }));
      if (self) onChanged();
      else if (add) {
        // What a backend does after adding someone: tell them (the page rechecks on it).
        await sendNotification(apiKey, {
          userId: user.id,
          type: "workspace_added",
          data: { from: me.id, text: `${me.name} added you to #${team}`, workspaceId: team },
        }).catch(() => {});
      }
    } catch {
      if (self && !add) onLeave(team, false);
      setProblem(`Could not ${add ? "add" : "remove"} ${self ? "you" : user.name}. Please try again.`);
    } finally {
      setBusy(null);
      refresh();
    }
  };

  const count = users.filter((u) => members[u.id]).length;
  return (
    <section className="side-members" data-testid="members">
      <h3>
        Members of #{team} <span className="count">{count}</span>
      </h3>
      <ul className="member-list">
        {users.map((u) => {
          const member = members[u.id];
          const self = u.id === me.id;
          const label = self
            ? `${member ? "Leave" : "Join"} #${team}`
            : member
              ? `Remove ${u.name} from #${team}`
              : `Add ${u.name} to #${team}`;
          return (
            <li key={u.id} data-user={u.id} data-member={member ? "yes" : "no"}>
              <Avatar userId={u.id} name={u.name} size="sm" />
              <span className="member-name">{u.name}</span>
              {self && <span className="you">you</span>}
              <button
                type="button"
                className={`mini ${member ? "ghost" : "secondary"}`}
                disabled={member === undefined || busy === u.id}
                onClick={() => toggle(u)}
                aria-label={label}
              >
                {self ? (member ? "Leave" : "Join") : member ? "Remove" : "Add"}
              </button>
            </li>
          );
        })}
      </ul>
      {problem && (
        <p className="small error-text" role="status">
          {problem}
        </p>
      )}
      <p className="muted small">
        Only members can open #{team}. Removing someone takes them out of it at once, even on a page they have open.
      </p>
    </section>
  );
}
