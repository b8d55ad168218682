const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function pad(n: number, w = 2): string {
  return String(n).padStart(w, "0");
}

/**
 * Formats a time as Go's time.RubyDate in local time, as Convoy writes every CreatedTime.
 * @example rubyDate(new Date()) // "Mon Jan 02 15:04:05 -0700 2006"
 */
export function rubyDate(d: Date = new Date()): string {
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? "+" : "-";
  const a = Math.abs(off);
  return `${DAYS[d.getDay()]} ${MONTHS[d.getMonth()]} ${pad(d.getDate())} ${pad(d.getHours())}:${
    pad(d.getMinutes())
  }:${pad(d.getSeconds())} ${sign}${pad(Math.floor(a / 60))}${pad(a % 60)} ${d.getFullYear()}`;
}
