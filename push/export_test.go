package push

// extractStampForTests is the completed-pull stamp Extract leaves in DIR.
const extractStampForTests = extractStateName
