// cri is the few crictl commands the e2e rig needs (crictl, in
// sigs.k8s.io/cri-tools, is not on the Go module proxy), spoken over CRI to
// the rig's own containerd:
//
//	cri SOCKET ps        sandboxes and containers
//	cri SOCKET images    images with their tags
//	cri SOCKET rm-all    stop and remove every sandbox (teardown: kills the
//	                     containers and releases their network namespaces
//	                     through the CNI plugins, which a plain kill would not)
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	rt "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: cri SOCKET ps|images|rm-all")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "cri:", err)
		os.Exit(1)
	}
}

func run(socket, cmd string) error {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := rt.NewRuntimeServiceClient(conn)
	switch cmd {
	case "ps":
		ps, err := r.ListPodSandbox(ctx, &rt.ListPodSandboxRequest{})
		if err != nil {
			return err
		}
		for _, p := range ps.Items {
			fmt.Printf("sandbox   %.13s %-20s %s/%s\n", p.Id, p.State, p.Metadata.Namespace, p.Metadata.Name)
		}
		cs, err := r.ListContainers(ctx, &rt.ListContainersRequest{})
		if err != nil {
			return err
		}
		for _, c := range cs.Containers {
			fmt.Printf("container %.13s %-20s %s (sandbox %.13s)\n", c.Id, c.State, c.Metadata.Name, c.PodSandboxId)
		}
	case "images":
		is, err := rt.NewImageServiceClient(conn).ListImages(ctx, &rt.ListImagesRequest{})
		if err != nil {
			return err
		}
		for _, i := range is.Images {
			fmt.Printf("%.19s %9d %v\n", i.Id, i.Size, i.RepoTags)
		}
	case "rm-all":
		ps, err := r.ListPodSandbox(ctx, &rt.ListPodSandboxRequest{})
		if err != nil {
			return err
		}
		var failed int
		for _, p := range ps.Items {
			_, errStop := r.StopPodSandbox(ctx, &rt.StopPodSandboxRequest{PodSandboxId: p.Id})
			_, errRm := r.RemovePodSandbox(ctx, &rt.RemovePodSandboxRequest{PodSandboxId: p.Id})
			if errStop != nil || errRm != nil {
				failed++
				fmt.Printf("sandbox %.13s %s/%s: stop: %v, remove: %v\n", p.Id, p.Metadata.Namespace, p.Metadata.Name, errStop, errRm)
				continue
			}
			fmt.Printf("removed sandbox %.13s %s/%s\n", p.Id, p.Metadata.Namespace, p.Metadata.Name)
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d sandboxes not removed", failed, len(ps.Items))
		}
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
	return nil
}
