package main

// scenarios is the registry: one line per scenario, in the order they run.
func scenarios() []Scenario {
	return []Scenario{
		workerScenario(),
		enqueueScenario(),
		ordersScenario(),
		pickupScenario(),
		workflowScenario(),
		limitsScenario(),
	}
}
