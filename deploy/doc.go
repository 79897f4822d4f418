// Package deploy holds Conveyor's deployment files: the Dockerfile, the docker compose stack,
// the Prometheus configuration and alert rules, and the kustomize base in k8s/. It has no
// code; its tests validate those files offline against the code they deploy (configuration,
// metric names, ports, shutdown timeouts) and render the kustomize base.
package deploy
