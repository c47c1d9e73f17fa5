// Command kstatus reads Kubernetes objects as JSON on stdin (one object, a List such as
// `kubectl get -o json` prints, or several objects one after another) and prints, one JSON line
// per object, the status that sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute gives it: the
// status Flux's health checks and `kubectl wait`-like tools built on cli-utils see.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func compute(obj map[string]interface{}) (result, error) {
	u := &unstructured.Unstructured{Object: obj}
	res, err := status.Compute(u)
	if err != nil {
		return result{}, fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return result{u.GetKind(), u.GetNamespace(), u.GetName(), res.Status.String(), res.Message}, nil
}

func run(in io.Reader, out io.Writer) error {
	decoder := json.NewDecoder(in)
	encoder := json.NewEncoder(out)
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("stdin is not a stream of JSON objects: %w", err)
		}
		// apimachinery's decoder gives whole numbers as int64, which unstructured's accessors
		// (metadata.generation, status.observedGeneration) require; encoding/json gives float64.
		var obj map[string]interface{}
		if err := utiljson.Unmarshal(raw, &obj); err != nil {
			return fmt.Errorf("stdin is not a stream of JSON objects: %w", err)
		}
		objects := []interface{}{obj}
		if items, isList := obj["items"].([]interface{}); isList {
			objects = items
		}
		for _, item := range objects {
			itemMap, ok := item.(map[string]interface{})
			if !ok {
				return fmt.Errorf("a List item is not an object: %v", item)
			}
			res, err := compute(itemMap)
			if err != nil {
				return err
			}
			if err := encoder.Encode(res); err != nil {
				return err
			}
		}
	}
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}
