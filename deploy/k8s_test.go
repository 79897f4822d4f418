package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/schedule"
	"github.com/conveyor-run/conveyor/tasks"
)

type meta struct {
	Name        string            `yaml:"name"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type k8sObject struct {
	Kind       string            `yaml:"kind"`
	Metadata   meta              `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	node       yaml.Node
}

type deployment struct {
	Spec struct {
		Replicas *int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata meta    `yaml:"metadata"`
			Spec     podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
	} `yaml:"securityContext"`
	InitContainers []container `yaml:"initContainers"`
	Containers     []container `yaml:"containers"`
	Volumes        []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
	} `yaml:"volumes"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name      string     `yaml:"name"`
		Value     string     `yaml:"value"`
		ValueFrom *yaml.Node `yaml:"valueFrom"`
	} `yaml:"env"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
		SecretRef *struct {
			Name string `yaml:"name"`
		} `yaml:"secretRef"`
	} `yaml:"envFrom"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
	SecurityContext *struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
	} `yaml:"securityContext"`
}

type probe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
	TCPSocket *struct {
		Port yaml.Node `yaml:"port"`
	} `yaml:"tcpSocket"`
}

// port resolves a probe's port (a number or a container port's name).
func (c container) port(n yaml.Node) string {
	for _, p := range c.Ports {
		if p.Name == n.Value {
			return strconv.Itoa(p.ContainerPort)
		}
	}
	return n.Value
}

type pdb struct {
	Spec struct {
		MinAvailable *int `yaml:"minAvailable"`
		Selector     struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
	} `yaml:"spec"`
}

type service struct {
	Spec struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Port       int       `yaml:"port"`
			TargetPort yaml.Node `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type scaledObject struct {
	Spec struct {
		ScaleTargetRef struct {
			Name string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicaCount int `yaml:"minReplicaCount"`
		MaxReplicaCount int `yaml:"maxReplicaCount"`
		Triggers        []struct {
			Type     string            `yaml:"type"`
			Metadata map[string]string `yaml:"metadata"`
		} `yaml:"triggers"`
	} `yaml:"spec"`
}

// rendered is the output of kustomize build, by kind and name.
type rendered map[string]map[string]k8sObject

func parseRendered(t *testing.T, out []byte) rendered {
	t.Helper()
	r := rendered{}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var o k8sObject
		if err := dec.Decode(&o.node); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("kustomize output: %v", err)
		}
		if err := o.node.Decode(&o); err != nil {
			t.Fatal(err)
		}
		if r[o.Kind] == nil {
			r[o.Kind] = map[string]k8sObject{}
		}
		r[o.Kind][o.Metadata.Name] = o
	}
	return r
}

func (r rendered) decode(t *testing.T, kind, name string, v any) {
	t.Helper()
	o, ok := r[kind][name]
	if !ok {
		t.Fatalf("no %s %s in the kustomize output", kind, name)
	}
	if err := o.node.Decode(v); err != nil {
		t.Fatalf("%s %s: %v", kind, name, err)
	}
}

// env is what a container's process sees: envFrom first, env over it. Secrets come from
// secrets (the operator's values), not from the template.
func (r rendered) env(t *testing.T, c container, secrets map[string]string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, ok := r["ConfigMap"][ef.ConfigMapRef.Name]
			if !ok {
				t.Fatalf("%s: envFrom ConfigMap %s is not rendered", c.Name, ef.ConfigMapRef.Name)
			}
			for k, v := range cm.Data {
				env[k] = v
			}
		case ef.SecretRef != nil:
			s, ok := r["Secret"][ef.SecretRef.Name]
			if !ok {
				t.Fatalf("%s: envFrom Secret %s is not rendered", c.Name, ef.SecretRef.Name)
			}
			for k := range s.StringData {
				env[k] = secrets[k]
			}
		}
	}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if e.ValueFrom != nil {
			env[e.Name] = "from-downward-api"
		}
	}
	return env
}

var deploymentRoles = map[string]config.Role{"api": config.RoleAPI, "worker": config.RoleWorker, "scheduler": config.RoleScheduler}

func TestKustomize(t *testing.T) {
	t.Parallel()
	r := parseRendered(t, runKustomize(t, "k8s"))
	secrets := fakeSecrets(t)

	t.Run("kinds", func(t *testing.T) {
		for kind, want := range map[string]int{"Deployment": 3, "Service": 1, "ConfigMap": 2, "Secret": 1, "PodDisruptionBudget": 3, "ScaledObject": 1} {
			if got := len(r[kind]); got != want {
				t.Errorf("%d %s objects, want %d", got, kind, want)
			}
		}
		for name := range deploymentRoles {
			if _, ok := r["Deployment"][name]; !ok {
				t.Errorf("no Deployment %s", name)
			}
		}
	})

	deployments := map[string]deployment{}
	for name := range deploymentRoles {
		var d deployment
		r.decode(t, "Deployment", name, &d)
		deployments[name] = d
	}

	t.Run("deployments", func(t *testing.T) {
		image := ""
		for name, d := range deployments {
			pod := d.Spec.Template.Spec
			for k, v := range d.Spec.Selector.MatchLabels {
				if d.Spec.Template.Metadata.Labels[k] != v {
					t.Errorf("%s: selector %s=%s does not match the pod labels", name, k, v)
				}
			}
			if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
				t.Errorf("%s: runAsNonRoot is not set", name)
			}
			if len(pod.Containers) != 1 {
				t.Fatalf("%s: %d containers, want 1", name, len(pod.Containers))
			}
			c := pod.Containers[0]
			for _, ct := range append(pod.InitContainers, c) {
				if image == "" {
					image = ct.Image
				} else if ct.Image != image {
					t.Errorf("%s/%s: image %s, others use %s", name, ct.Name, ct.Image, image)
				}
				if ct.Resources.Requests["cpu"] == "" || ct.Resources.Requests["memory"] == "" || ct.Resources.Limits["memory"] == "" {
					t.Errorf("%s/%s: resources %+v: want cpu and memory requests and a memory limit", name, ct.Name, ct.Resources)
				}
				if sc := ct.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !sc.ReadOnlyRootFilesystem {
					t.Errorf("%s/%s: want allowPrivilegeEscalation false and a read-only root file system", name, ct.Name)
				}
			}
			if len(c.Command) == 0 || c.Command[0] != "/usr/local/bin/"+name {
				t.Errorf("%s: command %q does not run /usr/local/bin/%s", name, c.Command, name)
			}
			if len(pod.InitContainers) != 1 || strings.Join(pod.InitContainers[0].Command, " ") != "/usr/local/bin/api migrate" {
				t.Errorf("%s: want one init container running api migrate", name)
			} else if _, err := config.Load(getenv(r.env(t, pod.InitContainers[0], secrets)), config.RoleMigrate); err != nil {
				t.Errorf("%s: migrate init container would refuse its environment: %v", name, err)
			}

			env := r.env(t, c, secrets)
			cfg, err := config.Load(getenv(env), deploymentRoles[name])
			if err != nil {
				t.Fatalf("%s would refuse its environment: %v", name, err)
			}
			if cfg.LogFormat != "json" {
				t.Errorf("%s: LOG_FORMAT %s, want json", name, cfg.LogFormat)
			}
			// The template's empty Secret is refused: no process runs on a default secret.
			if _, err := config.Load(getenv(r.env(t, c, map[string]string{})), deploymentRoles[name]); err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
				t.Errorf("%s starts with the Secret template's empty values: %v", name, err)
			}

			addr := cfg.MetricsAddr
			if name == "api" {
				addr = cfg.HTTPAddr
			}
			host, port := hostPort(t, addr)
			if host != "0.0.0.0" && host != "" {
				t.Errorf("%s listens on %s: probes and Prometheus cannot reach it", name, host)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.LivenessProbe == nil {
				t.Fatalf("%s: want an HTTP readiness probe and a liveness probe", name)
			}
			if got := c.port(c.ReadinessProbe.HTTPGet.Port); got != port {
				t.Errorf("%s: readiness probe on port %s, the process listens on %s", name, got, port)
			}
			wantReady := map[string]string{"api": "/readyz"}[name]
			if wantReady == "" {
				wantReady = "/healthz"
			}
			if c.ReadinessProbe.HTTPGet.Path != wantReady {
				t.Errorf("%s: readiness probe %s, want %s", name, c.ReadinessProbe.HTTPGet.Path, wantReady)
			}
			live := c.LivenessProbe
			switch {
			case live.HTTPGet != nil && (c.port(live.HTTPGet.Port) != port || live.HTTPGet.Path != "/healthz"):
				t.Errorf("%s: liveness probe %s on port %s", name, live.HTTPGet.Path, c.port(live.HTTPGet.Port))
			case live.TCPSocket != nil && c.port(live.TCPSocket.Port) != port:
				t.Errorf("%s: liveness probe on port %s, the process listens on %s", name, c.port(live.TCPSocket.Port), port)
			case live.HTTPGet == nil && live.TCPSocket == nil:
				t.Errorf("%s: liveness probe has no httpGet or tcpSocket", name)
			}
			a := d.Spec.Template.Metadata.Annotations
			if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != port || a["prometheus.io/path"] != "/metrics" {
				t.Errorf("%s: scrape annotations %v do not point at port %s /metrics", name, a, port)
			}
		}
	})

	t.Run("worker grace period outlasts its shutdown", func(t *testing.T) {
		w := deployments["worker"]
		cfg, err := config.Load(getenv(r.env(t, w.Spec.Template.Spec.Containers[0], secrets)), config.RoleWorker)
		if err != nil {
			t.Fatal(err)
		}
		g := w.Spec.Template.Spec.TerminationGracePeriodSeconds
		if g == nil || time.Duration(*g)*time.Second <= cfg.ShutdownTimeout+5*time.Second {
			t.Errorf("worker terminationGracePeriodSeconds %s <= SHUTDOWN_TIMEOUT %s + 5s (metrics server)", graceString(g), cfg.ShutdownTimeout)
		}
	})

	t.Run("pod disruption budgets", func(t *testing.T) {
		covered := map[string]bool{}
		for pname := range r["PodDisruptionBudget"] {
			var p pdb
			r.decode(t, "PodDisruptionBudget", pname, &p)
			if p.Spec.MinAvailable == nil || *p.Spec.MinAvailable < 1 {
				t.Errorf("PDB %s: want minAvailable >= 1", pname)
			}
			for dname, d := range deployments {
				match := len(p.Spec.Selector.MatchLabels) > 0
				for k, v := range p.Spec.Selector.MatchLabels {
					match = match && d.Spec.Template.Metadata.Labels[k] == v
				}
				if match {
					covered[dname] = true
				}
			}
		}
		for name := range deployments {
			if !covered[name] {
				t.Errorf("no PodDisruptionBudget selects the %s pods", name)
			}
		}
	})

	t.Run("replicas", func(t *testing.T) {
		for _, name := range []string{"api", "scheduler"} {
			if n := deployments[name].Spec.Replicas; n == nil || *n < 2 {
				t.Errorf("%s: replicas %v, want at least 2", name, n)
			}
		}
		if n := deployments["worker"].Spec.Replicas; n != nil {
			t.Errorf("worker sets replicas %d: the ScaledObject owns the count (a re-apply would reset it)", *n)
		}
	})

	t.Run("service selects the api", func(t *testing.T) {
		var s service
		r.decode(t, "Service", "api", &s)
		api := deployments["api"].Spec.Template
		for k, v := range s.Spec.Selector {
			if api.Metadata.Labels[k] != v {
				t.Errorf("Service api selector %s=%s does not match the api pods", k, v)
			}
		}
		c := api.Spec.Containers[0]
		if len(s.Spec.Ports) != 1 || c.port(s.Spec.Ports[0].TargetPort) != "8080" {
			t.Errorf("Service api ports %+v: want the api's port 8080", s.Spec.Ports)
		}
	})

	t.Run("secret template holds no value", func(t *testing.T) {
		s := r["Secret"]["conveyor-secrets"]
		for _, k := range []string{"DATABASE_URL", "REDIS_URL", "JWT_SECRET", "API_TOKEN", "MONITOR_USERS", "SMTP_URL"} {
			v, ok := s.StringData[k]
			if !ok {
				t.Errorf("Secret template lacks %s", k)
			} else if v != "" {
				t.Errorf("Secret template has a value for %s: templates carry no secret", k)
			}
		}
		if len(s.Data) > 0 {
			t.Errorf("Secret template has data %v", s.Data)
		}
	})

	t.Run("scheduler mounts the schedules ConfigMap at SCHEDULES_FILE", func(t *testing.T) {
		pod := deployments["scheduler"].Spec.Template.Spec
		c := pod.Containers[0]
		cfg, err := config.Load(getenv(r.env(t, c, secrets)), config.RoleScheduler)
		if err != nil {
			t.Fatal(err)
		}
		var data string
		for _, m := range c.VolumeMounts {
			if m.MountPath != path.Dir(cfg.SchedulesFile) {
				continue
			}
			for _, v := range pod.Volumes {
				if v.Name == m.Name && v.ConfigMap != nil {
					data = r["ConfigMap"][v.ConfigMap.Name].Data[path.Base(cfg.SchedulesFile)]
				}
			}
		}
		want := string(readFile(t, "schedules.yaml"))
		if data != want {
			t.Errorf("the scheduler's %s is not deploy/schedules.yaml (copy it to deploy/k8s/schedules.yaml):\n%s", cfg.SchedulesFile, data)
		}
		if _, err := schedule.LoadFile("schedules.yaml", tasks.All()); err != nil {
			t.Errorf("deploy/schedules.yaml does not load: %v", err)
		}
		var id bool
		for _, e := range c.Env {
			id = id || (e.Name == "SCHEDULER_ID" && e.ValueFrom != nil)
		}
		if !id {
			t.Error("scheduler: SCHEDULER_ID is not taken from the pod name")
		}
	})

	t.Run("KEDA scales the workers on the api's queue metrics", func(t *testing.T) {
		var so scaledObject
		r.decode(t, "ScaledObject", "worker", &so)
		if so.Spec.ScaleTargetRef.Name != "worker" {
			t.Errorf("ScaledObject targets %q, want the worker Deployment", so.Spec.ScaleTargetRef.Name)
		}
		if so.Spec.MinReplicaCount < 2 || so.Spec.MaxReplicaCount <= so.Spec.MinReplicaCount {
			t.Errorf("ScaledObject replicas %d..%d: want min >= 2 < max", so.Spec.MinReplicaCount, so.Spec.MaxReplicaCount)
		}
		if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "prometheus" {
			t.Fatalf("ScaledObject triggers %+v: want one prometheus trigger", so.Spec.Triggers)
		}
		md := so.Spec.Triggers[0].Metadata
		if md["serverAddress"] == "" || md["threshold"] == "" {
			t.Errorf("prometheus trigger %v: want serverAddress and threshold", md)
		}
		exported := exportedMetrics(t)
		metrics := promMetricNames(md["query"])
		if len(metrics) == 0 {
			t.Errorf("query %q selects no metric", md["query"])
		}
		for _, m := range metrics {
			// The queue collector (queues.go) is registered by the api only.
			if e, ok := exported[m]; !ok || e.file != "queues.go" {
				t.Errorf("query metric %s is not one of the queue collector's metrics", m)
			}
		}
		if !strings.Contains(string(readFile(t, filepath.Join(repoRoot(t), "cmd", "api", "main.go"))), "observe.NewQueueCollector(") {
			t.Error("cmd/api no longer registers the queue collector that the ScaledObject's query reads")
		}
		if strings.Contains(md["query"], "asynq_queue_size") {
			t.Error("asynq_queue_size counts completed tasks kept for their retention: it never drops to zero")
		}
	})
}

// TestKustomizeOverlay builds the overlay docs/operations.md tells operators to write: the
// base, their image and their secrets, replacing the template.
func TestKustomizeOverlay(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base, err := filepath.Abs("k8s")
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(dir, base)
	if err != nil {
		t.Fatal(err)
	}
	secrets := fakeSecrets(t)
	var env strings.Builder
	for _, k := range []string{"DATABASE_URL", "REDIS_URL", "JWT_SECRET", "API_TOKEN", "MONITOR_USERS", "SMTP_URL"} {
		env.WriteString(k + "=" + secrets[k] + "\n")
	}
	files := map[string]string{
		"kustomization.yaml": `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ` + rel + `
images:
  - name: conveyor
    newName: registry.example.com/conveyor
    newTag: "1.2.3"
secretGenerator:
  - name: conveyor-secrets
    behavior: replace
    envs: [secrets.env]
`,
		"secrets.env": env.String(),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := parseRendered(t, runKustomize(t, dir))
	var s struct {
		Data map[string]string `yaml:"data"`
	}
	r.decode(t, "Secret", "conveyor-secrets", &s)
	if len(s.Data) != 6 || s.Data["JWT_SECRET"] == "" {
		t.Errorf("overlay Secret data %v: want the six secrets", s.Data)
	}
	for name := range deploymentRoles {
		var d deployment
		r.decode(t, "Deployment", name, &d)
		for _, c := range append(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers...) {
			if c.Image != "registry.example.com/conveyor:1.2.3" {
				t.Errorf("%s/%s: image %s, want the overlay's", name, c.Name, c.Image)
			}
			for _, ef := range c.EnvFrom {
				if ef.SecretRef != nil && ef.SecretRef.Name != "conveyor-secrets" {
					t.Errorf("%s/%s: secretRef %s, want the overlay's conveyor-secrets", name, c.Name, ef.SecretRef.Name)
				}
			}
		}
	}
}

func graceString(g *int) string {
	if g == nil {
		return "unset (30s)"
	}
	return strconv.Itoa(*g) + "s"
}
