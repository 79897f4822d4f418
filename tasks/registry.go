package tasks

// All returns every task type. Adding a type is one file in this package
// plus one line here.
func All() *Registry {
	return NewRegistry(
		Define(handleSystemPing),
		Define(handleEmailWelcome),
		Define(handleEmailOrderConfirmation),
		Define(handleOrderProcess),
		Define(handleMaintenanceCleanup),
	)
}
