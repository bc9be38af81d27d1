/** The banner shown when the user lost access to a workspace while the page was open. */
export default function RemovedNotice({ workspace, left, onDismiss }) {
  return (
    <div className="removed-notice" role="alert" data-testid="removed-notice">
      <svg className="removed-icon" width="20" height="20" viewBox="0 0 24 24" aria-hidden="true">
        <path
          d="M16 21v-2a4 4 0 0 0-4-4H6a4 4 0 0 0-4 4v2M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8M17 11h6"
          fill="none"
          stroke="currentColor"
          strokeWidth="2"
          strokeLinecap="round"
          strokeLinejoin="round"
        />
      </svg>
      <p className="removed-text">
        <strong>{left ? `You left #${workspace}` : `You were removed from #${workspace}`}</strong>
        <span>Its messages and notes are no longer available to you.</span>
      </p>
      <button type="button" className="icon" onClick={onDismiss} aria-label="Dismiss">
        ×
      </button>
    </div>
  );
}
