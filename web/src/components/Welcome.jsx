import Avatar from "./Avatar.jsx";
import Logo from "./Logo.jsx";

/** The first screen: choose who to be. */
export default function Welcome({ users, onPick }) {
  return (
    <div className="center-screen welcome">
      <div className="card welcome-card">
        <div className="welcome-brand">
          <Logo size={40} />
          <div>
            <h1>Switchboard demo</h1>
            <p className="muted">Chat, presence, typing, notifications and a shared editor, live.</p>
          </div>
        </div>
        <h2>Who are you?</h2>
        <ul className="user-picker">
          {users.map((u) => (
            <li key={u.id}>
              <button type="button" onClick={() => onPick(u.id)} data-testid={`pick-${u.id}`}>
                <Avatar userId={u.id} name={u.name} size="lg" />
                <span className="user-picker-name">{u.name}</span>
                <span className="muted">@{u.id}</span>
              </button>
            </li>
          ))}
        </ul>
        <p className="muted small">
          Then open this page in a second window as someone else and watch both update. The tokens come from{" "}
          <code>GET /api/dev/demo</code>, which exists only in <code>switchboard serve --dev</code>.
        </p>
      </div>
    </div>
  );
}
