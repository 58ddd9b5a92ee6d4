package warm

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"

	"github.com/modelcar/modelcar/internal/kube"
)

// PrepullMode is how a pre-pull pod makes its node pull the modelcar.
type PrepullMode string

const (
	// ImageVolumeMode mounts the modelcar as a Kubernetes image volume
	// (volumes[].image, beta and on by default from Kubernetes 1.35) into
	// the pause container: the kubelet pulls it before starting the pod,
	// and the image needs no shell or command at all.
	ImageVolumeMode PrepullMode = "image-volume"
	// InitContainerMode runs the modelcar as an init container that exits
	// at once (InitCommand), for clusters without image volumes. The image
	// needs that command, e.g. a modelcar packed with `pack --base`.
	InitContainerMode PrepullMode = "init-container"
)

// ParsePrepullMode parses "image-volume" or "init-container".
func ParsePrepullMode(s string) (PrepullMode, error) {
	switch m := PrepullMode(s); m {
	case ImageVolumeMode, InitContainerMode:
		return m, nil
	case "":
		return ImageVolumeMode, nil
	}
	return "", fmt.Errorf("unknown pre-pull mode %q (want %s or %s)", s, ImageVolumeMode, InitContainerMode)
}

// Names and defaults of pre-pull DaemonSets.
const (
	// PrepullComponent is the app.kubernetes.io/component label value of
	// pre-pull DaemonSets and their pods.
	PrepullComponent = "prepull"
	// ModelcarMountPath is where image-volume mode mounts the modelcar in
	// the pause container (read-only; nothing reads it).
	ModelcarMountPath = "/modelcar"
	prepullAppName    = "modelcar-prepull"
	pullContainer     = "pull"
	pauseContainer    = "pause"
	modelcarVolume    = "modelcar"
)

// DefaultInitCommand is the init container's command in init-container
// mode: a program present in every base image with a shell.
var DefaultInitCommand = []string{"/bin/true"}

// PrepullOptions describes a pre-pull DaemonSet.
type PrepullOptions struct {
	// Image is the modelcar, REPO@sha256:... (REPO:TAG@sha256:... works
	// too). A reference without a digest is refused unless AllowTag, which
	// also accepts a PauseImage without a digest.
	Image    string
	AllowTag bool
	// Name of the DaemonSet; default PrepullName(Image). See
	// CheckPrepullName.
	Name      string
	Namespace string
	// NodeSelector and Tolerations choose the nodes, as in a pod spec.
	NodeSelector map[string]string
	Tolerations  []corev1.Toleration
	// Mode defaults to ImageVolumeMode.
	Mode PrepullMode
	// PauseImage idles after the pull; default DefaultPauseImage. Like
	// Image, it must be pinned by digest unless AllowTag.
	PauseImage string
	// InitCommand is the init container's command in InitContainerMode;
	// default DefaultInitCommand.
	InitCommand []string
	// PriorityClassName of the pods, if any (e.g. one that keeps them off
	// nodes short of room, or one that keeps them scheduled).
	PriorityClassName string
	// PodAnnotations are added to the pod template.
	PodAnnotations map[string]string
	// ImagePullSecrets name Secrets in Namespace for a private registry.
	ImagePullSecrets []string
}

var nonLabelChars = regexp.MustCompile(`[^a-z0-9]+`)

// PrepullName is the default DaemonSet name for image: "modelcar-prepull-"
// and the last path element of its repository, as a DNS label (so the
// DaemonSet of a model keeps its name when the digest changes).
func PrepullName(image string) string {
	repo := image
	if ref, err := name.ParseReference(image, name.WeakValidation); err == nil {
		repo = ref.Context().RepositoryStr()
	}
	base := repo[strings.LastIndex(repo, "/")+1:]
	if i := strings.IndexAny(base, ":@"); i >= 0 {
		base = base[:i]
	}
	base = strings.Trim(nonLabelChars.ReplaceAllString(strings.ToLower(base), "-"), "-")
	n := prepullAppName
	if base != "" {
		n += "-" + base
	}
	return strings.TrimRight(truncate(n, 56), "-")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// withDefaults fills the empty fields with their defaults (see Validate).
func (o PrepullOptions) withDefaults() PrepullOptions {
	if o.Name == "" {
		o.Name = PrepullName(o.Image)
	}
	if o.Mode == "" {
		o.Mode = ImageVolumeMode
	}
	if o.PauseImage == "" {
		o.PauseImage = DefaultPauseImage
	}
	if len(o.InitCommand) == 0 {
		o.InitCommand = DefaultInitCommand
	}
	return o
}

// prepullLabels are the labels of a pre-pull DaemonSet and its pods; the
// selector is all but managed-by.
func prepullLabels(name string) map[string]string {
	return map[string]string{
		ManagedByLabel: ManagedByValue,
		NameLabel:      prepullAppName,
		InstanceLabel:  name,
		ComponentLabel: PrepullComponent,
	}
}

func prepullSelector(name string) map[string]string {
	return map[string]string{NameLabel: prepullAppName, InstanceLabel: name}
}

// Prepull returns the DaemonSet that makes every node matching
// opts.NodeSelector and opts.Tolerations pull opts.Image and then idle: one
// pause container per node requesting 1m CPU and 8Mi memory, non-root
// (65535), read-only root filesystem, no capabilities, no service account
// token. A rollout to a new digest starts the new pods beside the old ones
// on every node at once (maxSurge 100%), so all nodes pull in parallel and
// each keeps the old image in use until the new one is there.
//
// It refuses options that Validate refuses, with its *FieldError.
func Prepull(opts PrepullOptions) (*appsv1.DaemonSet, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	digest, _ := imageDigest(o.Image, o.AllowTag) // checked by Validate
	annotations := map[string]string{ImageAnnotation: o.Image}
	if digest != "" {
		annotations[ImageDigestAnnotation] = digest
	}
	podAnnotations := copyMap(o.PodAnnotations)
	if podAnnotations == nil {
		podAnnotations = map[string]string{}
	}
	for k, v := range annotations {
		podAnnotations[k] = v
	}
	pause := corev1.Container{
		Name:                     pauseContainer,
		Image:                    o.PauseImage,
		ImagePullPolicy:          corev1.PullIfNotPresent,
		Resources:                tinyResources(),
		SecurityContext:          restrictedContainer(),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	spec := corev1.PodSpec{
		NodeSelector:                  copyMap(o.NodeSelector),
		Tolerations:                   append([]corev1.Toleration(nil), o.Tolerations...),
		PriorityClassName:             o.PriorityClassName,
		AutomountServiceAccountToken:  new(false),
		EnableServiceLinks:            new(false),
		TerminationGracePeriodSeconds: new(int64(1)),
		SecurityContext:               restrictedPod(),
		ImagePullSecrets:              pullSecrets(o.ImagePullSecrets),
	}
	switch o.Mode {
	case ImageVolumeMode:
		pause.VolumeMounts = []corev1.VolumeMount{{Name: modelcarVolume, MountPath: ModelcarMountPath, ReadOnly: true}}
		spec.Volumes = []corev1.Volume{{Name: modelcarVolume, VolumeSource: corev1.VolumeSource{
			Image: &corev1.ImageVolumeSource{Reference: o.Image, PullPolicy: corev1.PullIfNotPresent},
		}}}
	case InitContainerMode:
		spec.InitContainers = []corev1.Container{{
			Name:                     pullContainer,
			Image:                    o.Image,
			ImagePullPolicy:          corev1.PullIfNotPresent,
			Command:                  append([]string(nil), o.InitCommand...),
			Resources:                tinyResources(),
			SecurityContext:          restrictedContainer(),
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		}}
	}
	spec.Containers = []corev1.Container{pause}
	surge, none := intstr.FromString("100%"), intstr.FromInt32(0)
	return &appsv1.DaemonSet{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        o.Name,
			Namespace:   o.Namespace,
			Labels:      prepullLabels(o.Name),
			Annotations: annotations,
		},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: prepullSelector(o.Name)},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type:          appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxSurge: &surge, MaxUnavailable: &none},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: prepullLabels(o.Name), Annotations: podAnnotations},
				Spec:       spec,
			},
		},
	}, nil
}

// PrepullObjects is Prepull as the list Render, Apply and Delete take.
func PrepullObjects(opts PrepullOptions) ([]Object, error) {
	ds, err := Prepull(opts)
	if err != nil {
		return nil, err
	}
	return []Object{ds}, nil
}

// DeletePrepull deletes the pre-pull DaemonSet namespace/name (its pods go
// with it). It refuses a DaemonSet modelcar did not create and reports a
// missing one as not deleted.
func DeletePrepull(ctx context.Context, c *kube.Client, namespace, name string, dryRun bool) ([]kube.Deleted, error) {
	ds := &appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
	}
	return deleteOurs(ctx, c, []Object{ds}, dryRun)
}

// NodeState is where a node is with a pre-pull.
type NodeState string

const (
	// NodePulled: the node has the image (its pre-pull pod started, or
	// node.status.images lists the digest).
	NodePulled NodeState = "pulled"
	// NodePending: the DaemonSet targets the node and it does not have the
	// image yet.
	NodePending NodeState = "pending"
	// NodeNotTargeted: the node selector or an untolerated taint keeps the
	// DaemonSet off the node.
	NodeNotTargeted NodeState = "not targeted"
)

// NodeStatus is one node's pre-pull state.
type NodeStatus struct {
	Node  string    `json:"node"`
	State NodeState `json:"state"`
	// Since is when the node got the image (pulled) or when its pod was
	// created (pending); zero when unknown.
	Since time.Time `json:"since,omitzero"`
	// Pod is the pre-pull pod for the node, if any.
	Pod string `json:"pod,omitempty"`
	// Detail says why: the pod's state while pending, what showed the
	// image pulled, or why the node is not targeted.
	Detail string `json:"detail,omitempty"`
}

func (n NodeStatus) String() string {
	s := n.Node + ": " + string(n.State)
	if n.Detail != "" {
		s += " (" + n.Detail + ")"
	}
	return s
}

// PrepullStatus is the state of one pre-pull DaemonSet, node by node.
type PrepullStatus struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Image     string `json:"image"`
	// Nodes, sorted by name: every node in the cluster.
	Nodes []NodeStatus `json:"nodes"`
}

// Count returns how many nodes are in state.
func (s *PrepullStatus) Count(state NodeState) int {
	n := 0
	for _, ns := range s.Nodes {
		if ns.State == state {
			n++
		}
	}
	return n
}

// Targets returns how many nodes the DaemonSet targets.
func (s *PrepullStatus) Targets() int { return len(s.Nodes) - s.Count(NodeNotTargeted) }

// Done reports whether at least one node is targeted and every targeted
// node has the image.
func (s *PrepullStatus) Done() bool { return s.Targets() > 0 && s.Count(NodePending) == 0 }

// Summary is "2/3 target nodes have IMAGE" or, with no target,
// "no node is targeted".
func (s *PrepullStatus) Summary() string {
	if s.Targets() == 0 {
		return fmt.Sprintf("prepull %s/%s: no node is targeted (%d nodes)", s.Namespace, s.Name, len(s.Nodes))
	}
	return fmt.Sprintf("prepull %s/%s: %d/%d target nodes have %s", s.Namespace, s.Name, s.Count(NodePulled), s.Targets(), s.Image)
}

// GetPrepullStatus reports, for every node, whether the pre-pull
// DaemonSet namespace/name got its image there.
//
// A node has the image when its pre-pull pod for the current image has
// started (the kubelet starts containers only after pulling the pod's image
// volumes and running its init containers) or when node.status.images lists
// the digest. Pod state alone is sufficient: kubelets only report a limited
// number of images in node.status.images, and fake nodes (kwok) report none.
func GetPrepullStatus(ctx context.Context, cs kubernetes.Interface, namespace, name string) (*PrepullStatus, error) {
	ds, err := cs.AppsV1().DaemonSets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("getting prepull DaemonSet %s/%s: %w", namespace, name, err)
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("prepull DaemonSet %s/%s: %w", namespace, name, err)
	}
	pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("listing pods of prepull DaemonSet %s/%s: %w", namespace, name, err)
	}
	return prepullStatus(ds, nodes.Items, pods.Items), nil
}

// ListPrepulls returns the names of the pre-pull DaemonSets modelcar
// created in namespace, sorted.
func ListPrepulls(ctx context.Context, cs kubernetes.Interface, namespace string) ([]string, error) {
	sel := labels.SelectorFromSet(map[string]string{ManagedByLabel: ManagedByValue, ComponentLabel: PrepullComponent})
	list, err := cs.AppsV1().DaemonSets(namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("listing prepull DaemonSets in %s: %w", namespace, err)
	}
	var names []string
	for _, ds := range list.Items {
		names = append(names, ds.Name)
	}
	sort.Strings(names)
	return names, nil
}

// prepullStatus computes the status from what the API server says.
func prepullStatus(ds *appsv1.DaemonSet, nodes []corev1.Node, pods []corev1.Pod) *PrepullStatus {
	tmpl := ds.Spec.Template
	image := tmpl.Annotations[ImageAnnotation]
	digest := tmpl.Annotations[ImageDigestAnnotation]
	st := &PrepullStatus{Name: ds.Name, Namespace: ds.Namespace, Image: image}

	// The pods for the current image, by node (bound or, while
	// unscheduled, the node their DaemonSet affinity names).
	byNode := map[string][]*corev1.Pod{}
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil || p.Annotations[ImageAnnotation] != image || !ownedBy(p, ds) {
			continue
		}
		if n := podNode(p); n != "" {
			byNode[n] = append(byNode[n], p)
		}
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	for i := range nodes {
		n := &nodes[i]
		ns := NodeStatus{Node: n.Name}
		if why := notTargeted(&tmpl.Spec, n); why != "" {
			ns.State, ns.Detail = NodeNotTargeted, why
			st.Nodes = append(st.Nodes, ns)
			continue
		}
		ns.State = NodePending
		ns.Detail = "no pod yet"
		ns.Since = ds.CreationTimestamp.Time
		for _, p := range byNode[n.Name] {
			if pulled, since, how := podPulled(p); pulled {
				ns.State, ns.Pod, ns.Since, ns.Detail = NodePulled, p.Name, since, how
				break
			}
			ns.Pod, ns.Since, ns.Detail = p.Name, p.CreationTimestamp.Time, podPending(p)
		}
		if ns.State == NodePending && digest != "" && NodeHasDigest(n, digest) {
			ns.State, ns.Since, ns.Detail = NodePulled, time.Time{}, "listed in node.status.images"
		}
		st.Nodes = append(st.Nodes, ns)
	}
	return st
}

func ownedBy(p *corev1.Pod, ds *appsv1.DaemonSet) bool {
	for _, r := range p.OwnerReferences {
		if r.UID == ds.UID {
			return true
		}
	}
	return false
}

// podNode is the node p runs on or, before it is scheduled, the node the
// DaemonSet controller's required node affinity (metadata.name) names.
func podNode(p *corev1.Pod) string {
	if p.Spec.NodeName != "" {
		return p.Spec.NodeName
	}
	a := p.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, f := range term.MatchFields {
			if f.Key == "metadata.name" && f.Operator == corev1.NodeSelectorOpIn && len(f.Values) == 1 {
				return f.Values[0]
			}
		}
	}
	return ""
}

// podPulled reports whether p shows its node has the image: an init
// container that ran to completion (init-container mode) or a container
// started (image-volume mode: volumes are mounted before containers start).
func podPulled(p *corev1.Pod) (bool, time.Time, string) {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true, c.LastTransitionTime.Time, "pod " + p.Name + " ready"
		}
	}
	for _, c := range p.Status.ContainerStatuses {
		if r := c.State.Running; r != nil {
			return true, r.StartedAt.Time, "pod " + p.Name + " running"
		}
	}
	for _, c := range p.Status.InitContainerStatuses {
		if c.Name == pullContainer {
			if t := c.State.Terminated; t != nil && t.ExitCode == 0 {
				return true, t.FinishedAt.Time, "init container " + pullContainer + " of pod " + p.Name + " completed"
			}
		}
	}
	return false, time.Time{}, ""
}

// podPending describes why p has not started: unschedulable, a container
// waiting (ContainerCreating, ErrImagePull, ...), or its phase.
func podPending(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return strings.TrimSpace("pod " + p.Name + " " + c.Reason + ": " + c.Message)
		}
	}
	statuses := append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	for _, c := range statuses {
		if w := c.State.Waiting; w != nil && w.Reason != "" {
			s := "pod " + p.Name + " " + string(p.Status.Phase) + ", " + c.Name + " " + w.Reason
			if w.Message != "" {
				s += ": " + w.Message
			}
			return s
		}
		if t := c.State.Terminated; t != nil && t.ExitCode != 0 {
			return fmt.Sprintf("pod %s %s, %s exited %d (%s)", p.Name, p.Status.Phase, c.Name, t.ExitCode, t.Reason)
		}
	}
	if p.Spec.NodeName == "" {
		return "pod " + p.Name + " not scheduled yet"
	}
	phase := string(p.Status.Phase)
	if phase == "" {
		phase = "Pending"
	}
	return "pod " + p.Name + " " + phase + " on " + p.Spec.NodeName
}

// NodeHasDigest reports whether the kubelet lists an image with digest
// (sha256:...) in n.status.images, under any REPO@DIGEST name.
func NodeHasDigest(n *corev1.Node, digest string) bool {
	for _, img := range n.Status.Images {
		for _, nm := range img.Names {
			if strings.HasSuffix(nm, "@"+digest) {
				return true
			}
		}
	}
	return false
}

// daemonSetTolerations are the tolerations the DaemonSet controller adds
// to every DaemonSet pod (hostNetwork ones also get network-unavailable).
var daemonSetTolerations = []corev1.Toleration{
	{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	{Key: "node.kubernetes.io/disk-pressure", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: "node.kubernetes.io/memory-pressure", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: "node.kubernetes.io/pid-pressure", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: "node.kubernetes.io/unschedulable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
}

// notTargeted says why a DaemonSet with pod spec spec places no pod on n
// ("" when it does): its node selector or an untolerated NoSchedule or
// NoExecute taint.
func notTargeted(spec *corev1.PodSpec, n *corev1.Node) string {
	keys := make([]string, 0, len(spec.NodeSelector))
	for k := range spec.NodeSelector {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		want := spec.NodeSelector[k]
		if have, ok := n.Labels[k]; !ok {
			return fmt.Sprintf("no label %s=%s", k, want)
		} else if have != want {
			return fmt.Sprintf("label %s=%s, not %s", k, have, want)
		}
	}
	if spec.Affinity != nil && spec.Affinity.NodeAffinity != nil && spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		if ok, err := nodeaffinity.NewRequiredNodeAffinity(nil, spec.Affinity).Match(n); err != nil || !ok {
			return "does not match the required node affinity"
		}
	}
	tols := append(append([]corev1.Toleration(nil), spec.Tolerations...), daemonSetTolerations...)
	for _, taint := range n.Spec.Taints {
		if taint.Effect != corev1.TaintEffectNoSchedule && taint.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		if !tolerated(tols, taint) {
			return "taint " + taint.ToString() + " not tolerated"
		}
	}
	return ""
}

// tolerated reports whether tols tolerate taint, as the scheduler decides.
func tolerated(tols []corev1.Toleration, taint corev1.Taint) bool {
	return corev1helpers.TolerationsTolerateTaint(klog.Background(), tols, &taint, false)
}

// ErrNotPulled is what a *NotPulledError is (errors.Is): WaitPrepull's
// timeout passed before every target node had the image.
var ErrNotPulled = errors.New("image not pulled on every target node")

// NotPulledError is WaitPrepull's error when its timeout passes first.
type NotPulledError struct {
	Namespace, Name string
	Timeout         time.Duration
	// Status is the last status read (nil if none could be).
	Status *PrepullStatus
	// LastErr is the last error reading it, if the last try failed.
	LastErr error
}

func (e *NotPulledError) Is(target error) bool { return target == ErrNotPulled }

// Error names each pending node and its state or, with no target, why each
// node is not targeted (the first ten of each).
func (e *NotPulledError) Error() string {
	st := e.Status
	what := fmt.Sprintf("prepull %s/%s", e.Namespace, e.Name)
	var msg string
	switch {
	case st == nil:
		msg = fmt.Sprintf("%s: timed out after %v before reading its status", what, e.Timeout)
	case st.Targets() == 0:
		msg = fmt.Sprintf("%s: no node is targeted after %v: the node selector and tolerations match none of the %d nodes: %s",
			what, e.Timeout, len(st.Nodes), e.list(NodeNotTargeted))
	default:
		msg = fmt.Sprintf("%s: timed out after %v with the image on %d of %d target nodes; still pending: %s",
			what, e.Timeout, st.Count(NodePulled), st.Targets(), e.list(NodePending))
	}
	if e.LastErr != nil {
		msg += fmt.Sprintf(" (last error: %v)", e.LastErr)
	}
	return msg
}

func (e *NotPulledError) list(state NodeState) string {
	const maxListed = 10
	var parts []string
	for _, n := range e.Status.Nodes {
		if n.State != state {
			continue
		}
		if len(parts) == maxListed {
			parts = append(parts, fmt.Sprintf("and %d more", e.Status.Count(state)-maxListed))
			break
		}
		parts = append(parts, n.String())
	}
	return strings.Join(parts, "; ")
}

// Defaults of WaitOptions.
const (
	DefaultPrepullTimeout  = 30 * time.Minute
	DefaultPrepullInterval = 2 * time.Second
)

// nearDeadline reports whether ctx ends within d (an error then is most
// likely the deadline itself, e.g. from the client's rate limiter).
func nearDeadline(ctx context.Context, d time.Duration) bool {
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < d
}

// WaitOptions configures WaitPrepull.
type WaitOptions struct {
	// Timeout defaults to DefaultPrepullTimeout.
	Timeout time.Duration
	// Interval between looks at the cluster; default DefaultPrepullInterval.
	Interval time.Duration
	// Progress, if set, is called with a node's status whenever its state
	// or detail changes (and for every node at the first look).
	Progress func(NodeStatus)
}

// WaitPrepull waits until every node the pre-pull DaemonSet
// namespace/name targets has its image (see GetPrepullStatus), and at least
// one node is targeted (nodes may still join, e.g. from an autoscaler). It
// polls with wait.PollUntilContextTimeout. When opts.Timeout passes first
// it returns the last status and a *NotPulledError (errors.Is
// ErrNotPulled) that names each pending node and its state, or, with no
// target, why each node is not targeted.
func WaitPrepull(ctx context.Context, cs kubernetes.Interface, namespace, name string, opts WaitOptions) (*PrepullStatus, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultPrepullTimeout
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultPrepullInterval
	}
	var (
		last    *PrepullStatus
		lastErr error
		seen    = map[string]NodeStatus{}
	)
	err := wait.PollUntilContextTimeout(ctx, opts.Interval, opts.Timeout, true, func(ctx context.Context) (bool, error) {
		st, err := GetPrepullStatus(ctx, cs, namespace, name)
		if err != nil {
			if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
				return false, err
			}
			if ctx.Err() == nil && !nearDeadline(ctx, opts.Interval) {
				lastErr = err // transient: keep trying
			}
			return false, nil
		}
		last, lastErr = st, nil
		for _, n := range st.Nodes {
			if old, ok := seen[n.Node]; !ok || old.State != n.State || old.Detail != n.Detail {
				seen[n.Node] = n
				if opts.Progress != nil {
					opts.Progress(n)
				}
			}
		}
		return st.Done(), nil
	})
	if err == nil {
		return last, nil
	}
	if !wait.Interrupted(err) {
		return last, err
	}
	if ctx.Err() != nil {
		return last, fmt.Errorf("prepull %s/%s: %w", namespace, name, ctx.Err())
	}
	return last, &NotPulledError{Namespace: namespace, Name: name, Timeout: opts.Timeout, Status: last, LastErr: lastErr}
}
