// The overview's chart, in its own chunk: Chart.js (the largest library of the dashboard) loads
// in parallel with the API's answers instead of delaying the first page's script.
import { useEffect, useRef } from "react";
import { BarController, BarElement, CategoryScale, Chart, Legend, LinearScale, Tooltip } from "chart.js";
import type { DeliveryDay } from "../api/client";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Tooltip, Legend);

export default function DeliveriesChart({ days }: { days: DeliveryDay[] }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    if (!canvas.current) return;
    const chart = new Chart(canvas.current, {
      type: "bar",
      data: {
        labels: days.map((d) => d.day.slice(5)),
        datasets: [
          { label: "Sent", data: days.map((d) => d.sent), backgroundColor: "#1d4ed8" },
          { label: "Delivered", data: days.map((d) => d.delivered), backgroundColor: "#15803d" },
          { label: "Bounced", data: days.map((d) => d.bounced), backgroundColor: "#b91c1c" },
          { label: "Complaints", data: days.map((d) => d.complaints), backgroundColor: "#a16207" },
          { label: "Replies", data: days.map((d) => d.replies), backgroundColor: "#7e22ce" },
        ],
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
      },
    });
    return () => chart.destroy();
  }, [days]);
  return (
    <div className="relative h-64">
      <canvas ref={canvas} role="img" aria-label="Sent, delivered, bounced, complaints and replies per day">
        The same figures are in the table "Figures per day" below.
      </canvas>
    </div>
  );
}
